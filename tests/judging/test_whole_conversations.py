"""The judge reads the whole conversation: a two-turn study judged by a served judge (the canned
judge of conftest.py, a real HTTP server on 127.0.0.1 that records every request), pairwise and
graded, with the prompt chosen by the number of turns; and ``last_turn_only`` as the opt-out,
named on the results page."""

from __future__ import annotations

import pytest

from annotation.studies import study_create
from evalsite.errors import ServiceError
from generation.importers import ParsedQuestion
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported
from judging.models import JudgeRun, Judgment
from judging.prompts import judge_prompt_for, judge_prompt_load
from judging.runs import ONE_TURN_PROMPT, judge_run_create, judge_run_execute
from tests.judging.conftest import longer_wins

pytestmark = pytest.mark.django_db(transaction=True)

# Two two-turn questions, the second turn referring back to the first (as 48 of Japanese
# MT-Bench's 80 do).
TURNS = (
    ("素数を小さい順に三つ挙げてください。", "それらの和を求めてください。"),
    ("富士山の高さを教えてください。", "それを英語で言い直してください。"),
)
REPLIES = {
    "brief": (("2, 3, 5です。", "10です。"), ("3776 mです。", "It is 3,776 m.")),
    "thorough": (
        ("小さい順に 2、3、5 です。1 は素数ではありません。", "2 + 3 + 5 = 10 になります。"),
        ("標高は 3776 メートルです。日本で最も高い山です。", "Mount Fuji is 3,776 meters high."),
    ),
}


def two_turn_study(name: str = "two turns"):
    prompt_set = prompt_set_create(
        name=f"{name} questions",
        questions=[
            ParsedQuestion(line=i, text=first, follow_ups=(second,), reference=f"参考{i}")
            for i, (first, second) in enumerate(TURNS, 1)
        ],
    )
    questions = list(prompt_set.questions.order_by("position"))
    runs = []
    for style, replies in REPLIES.items():
        model = language_model_register(name=f"{name}-{style}", name_or_path=f"nowhere/{style}")
        answers = {q.pk: list(texts) for q, texts in zip(questions, replies, strict=True)}
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=answers)
        )
    return study_create(name=name, runs=runs)


def grade_five(prompt: str, nth: int = 0) -> str:
    return "よくできています。\n評価: 5"


def test_every_judge_request_holds_the_first_turn_and_both_first_answers(
    served_judge, canned_judge
):
    study = two_turn_study()
    run = judge_run_create(judge=served_judge, study=study)  # the default, ja_pairwise
    # A two-turn study gets the prompt's multi-turn variant.
    assert run.multi_turn_prompt == judge_prompt_for("ja_pairwise-multi-turn")
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error

    asked = canned_judge.prompts()
    assert len(asked) == 4  # two comparisons, both orders
    for prompt in asked:
        (first, second), replies = next(
            (turns, [REPLIES[s][i] for s in REPLIES])
            for i, turns in enumerate(TURNS)
            if turns[1] in prompt
        )
        assert first in prompt, prompt
        for model_replies in replies:
            assert model_replies[0] in prompt, prompt  # each model's first-turn answer
            assert model_replies[1] in prompt, prompt  # ... and the answer being judged
        # Turn one comes before turn two.
        assert prompt.index(first) < prompt.index(second)
    for judgment in Judgment.objects.filter(run=run):
        assert judgment.prompt == run.multi_turn_prompt
        assert judgment.verdict in ("a", "b", "tie")


def test_the_order_of_earlier_answers_follows_the_shown_order(served_judge, canned_judge):
    study = two_turn_study()
    run = judge_run_create(judge=served_judge, study=study)
    judge_run_execute(run.pk)
    for judgment in Judgment.objects.filter(run=run).select_related("comparison__answer_a"):
        shown_first = (
            judgment.comparison.answer_a if judgment.first == "a" else judgment.comparison.answer_b
        )
        style = shown_first.run.model.name.split("-")[-1]
        question = TURNS.index(next(t for t in TURNS if t[1] in judgment.prompt_text))
        earlier = REPLIES[style][question][0]
        other = next(REPLIES[s][question][0] for s in REPLIES if s != style)
        history = judgment.prompt_text.split("[最後の質問]")[0]
        assert history.index(earlier) < history.index(other)


def test_grading_shows_the_models_own_earlier_turn(served_judge, canned_judge):
    canned_judge.reply = grade_five
    study = two_turn_study()
    run = judge_run_create(judge=served_judge, study=study, grading=True)
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error
    rows = list(Judgment.objects.filter(run=run).select_related("answer", "prompt"))
    assert len(rows) == 8  # two models x two questions x two turns
    for row in rows:
        # Turn 1 is graded with the one-turn prompt, turn 2 with the whole conversation.
        expected = "ja_grading" if row.answer.turn == 1 else "ja_grading-multi-turn"
        assert row.prompt.name == expected
        if row.answer.turn == 2:
            own = next(r for r in REPLIES.values() for q in r if q[1] == row.answer.text)
            first = next(q[0] for q in own if q[1] == row.answer.text)
            assert first in row.prompt_text
            others = [q[0] for r in REPLIES.values() if r is not own for q in r]
            assert not any(other in row.prompt_text for other in others)
        assert row.score == 5


def test_last_turn_only_shows_the_last_turn_and_the_results_page_says_so(
    served_judge, canned_judge, admin_client
):
    study = two_turn_study()
    run = judge_run_create(judge=served_judge, study=study, last_turn_only=True)
    judge_run_execute(run.pk)
    for prompt in canned_judge.prompts():
        assert not any(turns[0] in prompt for turns in TURNS), prompt
        assert not any(r[0] in prompt for replies in REPLIES.values() for r in replies)
    page = admin_client.get(f"/studies/{study.pk}/results/")
    assert page.status_code == 200
    assert "last turn only" in page.content.decode()


def test_a_one_turn_prompt_without_a_variant_is_refused_on_a_two_turn_study(served_judge, tmp_path):
    study = two_turn_study()
    path = tmp_path / "one_turn.yaml"
    path.write_text(
        "name: one_turn_only\nkind: pairwise\nverdict_format: last_line_123\n"
        "template: |\n  {{ question }}\n  [回答1]\n  {{ answer_1 }}\n  [回答2]\n  {{ answer_2 }}\n",
        encoding="utf-8",
    )
    (prompt,) = judge_prompt_load(path)
    assert not prompt.multi_turn
    with pytest.raises(ServiceError) as refused:
        judge_run_create(judge=served_judge, study=study, prompt=prompt)
    assert str(refused.value) == ONE_TURN_PROMPT.format(
        prompt=prompt,
        count=2,
        what="comparisons",
        name=study.name,
        variant="one_turn_only-multi-turn",
    )
    assert not JudgeRun.objects.filter(study=study).exists()
    # Asked for, the last turn alone is allowed.
    assert judge_run_create(judge=served_judge, study=study, prompt=prompt, last_turn_only=True)


def test_longer_wins_still_reads_the_last_turn(served_judge, canned_judge):
    """The canned judge's rule reads [回答1] / [回答2] of the last turn, not the history."""
    study = two_turn_study()
    run = judge_run_create(judge=served_judge, study=study)
    judge_run_execute(run.pk)
    for row in Judgment.objects.filter(run=run):
        assert row.raw_output == longer_wins(row.prompt_text)
