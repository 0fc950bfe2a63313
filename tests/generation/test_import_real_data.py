"""Real data no one here wrote: ELYZA-tasks-100 and Rakuda questions in FastChat's question shape,
Rakuda answers in FastChat's model_answer shape, imported through the commands, then a study
opened on them."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from annotation.models import Comparison, Study
from annotation.studies import study_create
from generation.models import Answer, GenerationRun, LanguageModel, PromptSet

pytestmark = pytest.mark.django_db


RAKUDA = "rakuda/head_fae1ee7/jrank/data"
ELYZA = "elyza-tasks-100/data/test/elyza100_jp.jsonl"


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write_jsonl(path, records) -> None:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )


def test_elyza_tasks_in_fastchat_shape_come_in_with_their_reference_answers(
    external_data, tmp_path
):
    tasks = _read_jsonl(external_data / ELYZA)
    assert len(tasks) == 100
    # ELYZA-tasks-100 has `input` / `output`: the same tasks as FastChat questions and answers.
    questions = tmp_path / "elyza_questions.jsonl"
    _write_jsonl(
        questions,
        [
            {"question_id": f"elyza-{n:03d}", "category": "elyza-tasks-100", "turns": [t["input"]]}
            for n, t in enumerate(tasks, start=1)
        ],
    )
    answers = tmp_path / "elyza_reference.jsonl"
    _write_jsonl(
        answers,
        [
            {
                "question_id": f"elyza-{n:03d}",
                "model_id": "elyza-tasks-100-reference",
                "choices": [{"index": 0, "turns": [t["output"]]}],
            }
            for n, t in enumerate(tasks, start=1)
        ],
    )
    call_command("import_prompts", str(questions), "--name", "elyza-tasks-100")
    call_command("import_answers", str(answers), "--prompt-set", "elyza-tasks-100")

    prompt_set = PromptSet.objects.get(name="elyza-tasks-100")
    stored = list(prompt_set.questions.order_by("position"))
    assert [q.text for q in stored] == [t["input"].strip() for t in tasks]
    assert all(q.follow_ups == [] for q in stored)
    run = GenerationRun.objects.get(prompt_set=prompt_set)
    assert run.imported and (run.done, run.total) == (100, 100)
    texts = dict(run.answers.values_list("question__external_id", "text"))
    assert texts == {f"elyza-{n:03d}": t["output"].strip() for n, t in enumerate(tasks, start=1)}


def test_rakuda_questions_and_answers_open_a_study(external_data, tmp_path):
    data = external_data / RAKUDA
    questions = _read_jsonl(data / "rakuda_v2/questions.jsonl")
    # Rakuda v2's questions and answers are FastChat files as they are.
    call_command("import_prompts", str(data / "rakuda_v2/questions.jsonl"), "--name", "rakuda")
    for name in ("line-3.6b-sft", "rinna-3.6b-sft"):
        call_command(
            "import_answers",
            str(data / f"rakuda_v2/answers/{name}.jsonl"),
            "--prompt-set",
            "rakuda",
        )
    # Rakuda v1's answers predate FastChat's `choices`: the same answers in model_answer shape.
    gpt4 = _read_jsonl(data / "rakuda_v1/answers/gpt4.jsonl")
    converted = tmp_path / "gpt4.jsonl"
    _write_jsonl(
        converted,
        [
            {
                "question_id": a["question_id"],
                "answer_id": a["answer_id"],
                "model_id": a["model_id"],
                "choices": [{"index": 0, "turns": [a["text"]]}],
            }
            for a in gpt4
        ],
    )
    call_command("import_answers", str(converted), "--prompt-set", "rakuda", "--model", "gpt-4")

    prompt_set = PromptSet.objects.get(name="rakuda")
    assert [q.external_id for q in prompt_set.questions.order_by("position")] == [
        q["question_id"] for q in questions
    ]
    runs = list(GenerationRun.objects.filter(prompt_set=prompt_set).order_by("pk"))
    assert [r.model.name for r in runs] == [
        "line-corporation/japanese-large-lm-3.6b-instruction-sft",
        "rinna/japanese-gpt-neox-3.6b-instruction-sft-v2",
        "gpt-4",
    ]
    # The models were registered from model_id as imported ones: nothing for a worker to load.
    assert all(m.name_or_path == "" and not m.is_endpoint for m in LanguageModel.objects.all())
    line_answers = _read_jsonl(data / "rakuda_v2/answers/line-3.6b-sft.jsonl")
    stored = dict(runs[0].answers.values_list("question__external_id", "text"))
    assert stored == {a["question_id"]: a["choices"][0]["turns"][0].strip() for a in line_answers}
    assert dict(runs[2].answers.values_list("question__external_id", "text")) == {
        a["question_id"]: a["text"].strip() for a in gpt4
    }

    study = study_create(name="rakuda-imported", runs=runs, votes_per_comparison=1, open_now=True)
    assert study.status == Study.Status.OPEN
    comparisons = Comparison.objects.filter(study=study)
    assert comparisons.count() == 3 * 40  # three model pairs, every question
    # Each comparison pairs two imported answers to its own question.
    for comparison in comparisons.select_related("answer_a", "answer_b"):
        assert comparison.answer_a.question_id == comparison.question_id
        assert comparison.answer_b.question_id == comparison.question_id
    assert Answer.objects.filter(run__in=runs).count() == 120
