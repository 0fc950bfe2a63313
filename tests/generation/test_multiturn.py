"""Multi-turn questions on the tiny model: a run answers turn by turn, each later turn generated
from the conversation so far (this model's own earlier replies), one answer per turn, with the
provenance of each; a resumed run generates only the (question, turn) rows it is missing."""

from __future__ import annotations

import json

import pytest
from django.db.models import Count

from generation.engine import render
from generation.importers import ParsedQuestion
from generation.models import Answer, GenerationRun
from generation.registry import prompt_set_create
from generation.runs import generation_run_create, generation_run_execute
from generation.templates import as_template, template_latest
from tests.conftest import FIXTURES
from tests.generation.conftest import register_tiny

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

FOLLOW_UPS = ("もう少し詳しく説明してください。", "それを一言でまとめてください。")


def _two_turn_set(count: int = 6):
    with (FIXTURES / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:count]
    questions = [
        ParsedQuestion(line=i, text=row["text"], follow_ups=(FOLLOW_UPS[i % 2],))
        for i, row in enumerate(rows[:-1], start=1)
    ]
    # One single-turn question among them: total counts answers, not questions.
    questions.append(ParsedQuestion(line=count, text=rows[-1]["text"]))
    return prompt_set_create(name="two-turn", questions=questions)


@pytest.fixture
def two_turn_run(tiny_model_dir, quiet_heartbeat, one_torch_thread):
    model = register_tiny(tiny_model_dir, max_new_tokens=24)
    prompt_set = _two_turn_set()
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    generation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_a_two_turn_prompt_set_stores_two_answers_per_question(two_turn_run, tiny_model_dir):
    run = two_turn_run
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert (run.total, run.done, run.answers.count()) == (11, 11, 11)
    per_question = dict(
        run.answers.values_list("question_id").annotate(n=Count("id")).values_list("question", "n")
    )
    for question in run.prompt_set.questions.all():
        assert per_question[question.pk] == len(question.turns)
        turns = list(run.answers.filter(question=question).order_by("turn"))
        assert [a.turn for a in turns] == list(range(1, len(question.turns) + 1))


def test_the_second_turn_is_generated_from_a_prompt_holding_the_first(two_turn_run):
    from generation.engine.loading import load_tokenizer

    run = two_turn_run
    template = as_template(run.template)
    tokenizer = load_tokenizer(_model_dir(run))
    for question in run.prompt_set.questions.exclude(follow_ups=[]):
        first = run.answers.get(question=question, turn=1)
        second = run.answers.get(question=question, turn=2)
        messages = render.conversation(question.turns, [first.text])
        assert second.prompt_text == render.render_prompt(template, messages, tokenizer)
        assert f"システム: {first.text}\nユーザー: {question.follow_ups[0]}" in second.prompt_text
        assert second.prompt_tokens == len(render.encode_prompt(template, messages, tokenizer))
        assert first.prompt_text == render.render_prompt(
            template, render.conversation(question.turns[:1], []), tokenizer
        )


def test_every_answer_records_how_it_was_made(two_turn_run):
    from generation.engine.revision import local_revision

    run = two_turn_run
    assert run.template == template_latest("line_sft")
    revision = local_revision(_model_dir(run))
    for answer in run.answers.all():
        assert answer.model_revision == revision
        assert answer.decoding == {"max_new_tokens": 24, "do_sample": False, "seed": 0}
        assert answer.stop_reason in ("eos", "stop_string", "length")
        assert answer.truncated == (answer.stop_reason == "length")
        assert 1 <= answer.new_tokens <= 24 and answer.prompt_tokens > 0
        assert "ユーザー:" not in answer.text


def test_a_resumed_run_generates_only_the_missing_turns_and_the_same_text(two_turn_run):
    run = two_turn_run
    questions = list(run.prompt_set.questions.exclude(follow_ups=[]).order_by("position"))
    # As if the worker died between turns (question 0's reply to turn 2 lost) and before a
    # question began (question 1 lost both turns).
    lost = list(
        Answer.objects.filter(question=questions[0], turn=2, run=run)
        | Answer.objects.filter(question=questions[1], run=run)
    )
    before = {(a.question_id, a.turn): a.text for a in lost}
    kept = set(run.answers.exclude(pk__in=[a.pk for a in lost]).values_list("pk", flat=True))
    Answer.objects.filter(pk__in=[a.pk for a in lost]).delete()
    GenerationRun.objects.filter(pk=run.pk).update(status=GenerationRun.Status.QUEUED, done=8)

    generation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert run.answers.count() == 11
    new = run.answers.exclude(pk__in=kept)
    assert {(a.question_id, a.turn) for a in new} == set(before)
    # Greedy on the same machine, from the same stored earlier replies: the same text again.
    assert {(a.question_id, a.turn): a.text for a in new} == before


def _model_dir(run):
    from django.conf import settings

    return str(settings.MODEL_STORAGE / run.model.name_or_path)
