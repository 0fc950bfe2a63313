"""Published grading scales on real data: ELYZA-tasks-100 (its tasks, reference outputs and
eval_aspect, read from the shared external data, never copied into the repository) graded with
elyza_grading 1-5, MT-Bench grading 1-10 with the reference for math, reasoning and coding,
scores reported per scale; and the fit check that refuses, in one line, a judge the prompt
does not fit."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from annotation.studies import study_create
from generation.registry import language_model_register, prompt_set_import
from generation.runs import generation_run_create_imported
from judging.grading import grading_results
from judging.models import Judgment
from judging.prompts import judge_prompt_for
from judging.runs import judge_run_create, judge_run_execute
from tests.conftest import EXTERNAL_DATA

pytestmark = pytest.mark.django_db(transaction=True)

ELYZA = EXTERNAL_DATA / "elyza-tasks-100" / "data" / "test" / "elyza100_jp.jsonl"
TASKS = 6


def elyza_study():
    lines = ELYZA.read_bytes().splitlines(keepends=True)[:TASKS]
    prompt_set = prompt_set_import(name="elyza", data=b"".join(lines), filename="elyza.jsonl")
    questions = list(prompt_set.questions.order_by("position"))
    tasks = [json.loads(line) for line in lines]
    runs = []
    for style in ("reference", "first-line"):
        model = language_model_register(name=f"elyza-{style}", name_or_path=f"nowhere/{style}")
        answers = {
            q.pk: task["output"] if style == "reference" else task["output"].splitlines()[0]
            for q, task in zip(questions, tasks, strict=True)
        }
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=answers)
        )
    return study_create(name="elyza study", runs=runs), tasks


@pytest.mark.skipif(not ELYZA.exists(), reason="the shared external data is not on this machine")
def test_elyza_grading_applies_each_tasks_eval_aspect_and_the_deductions(
    served_judge, canned_judge
):
    study, tasks = elyza_study()
    canned_judge.reply = lambda prompt, nth: "正しい。\n評価: 4"
    run = judge_run_create(
        judge=served_judge,
        study=study,
        grading=True,
        prompt=judge_prompt_for("elyza_grading", True),
    )
    judge_run_execute(run.pk)
    asked = canned_judge.prompts()
    assert len(asked) == 2 * TASKS
    for task in tasks:
        shown = [p for p in asked if task["input"].strip() in p]
        assert len(shown) == 2
        for prompt in shown:
            assert task["eval_aspect"].strip() in prompt  # the task's own criteria
            assert task["output"].strip() in prompt  # its reference
            assert "1 点引く" in prompt and "2 点とする" in prompt  # the general deductions
    results = grading_results(run)
    assert (results["score_min"], results["score_max"]) == (1, 5)
    assert [(s["score_min"], s["score_max"]) for s in results["scales"]] == [(1, 5)]
    assert {m["mean"] for m in results["models"]} == {4.0}


def test_mtbench_grading_uses_the_reference_for_its_categories_and_never_mixes_scales(
    served_judge, canned_judge
):
    from tests.judging.test_whole_conversations import two_turn_study

    study = two_turn_study("mt scales")
    first, second = study.prompt_set.questions.order_by("position")
    first.category, second.category = "math", "writing"
    first.save(update_fields=["category"])
    second.save(update_fields=["category"])
    canned_judge.reply = lambda prompt, nth: "評価: [[7]]" if "参考解答" in prompt else "評価: 4"
    run = judge_run_create(
        judge=served_judge,
        study=study,
        grading=True,
        prompt=judge_prompt_for("ja_grading", True),  # 1-5 for the other categories
        reference_prompt=judge_prompt_for("mtbench_grading_reference", True),  # 1-10
    )
    judge_run_execute(run.pk)
    rows = Judgment.objects.filter(run=run).select_related("answer__question", "prompt")
    for row in rows:
        math = row.answer.question.category == "math"
        assert row.prompt.name.startswith("mtbench_grading_reference" if math else "ja_grading")
        if math:
            assert "参考1" in row.prompt_text  # the question's reference answer
    results = grading_results(run)
    scales = {(s["score_min"], s["score_max"]): s for s in results["scales"]}
    assert set(scales) == {(1, 5), (1, 10)}
    assert {m["mean"] for m in scales[(1, 10)]["models"]} == {7.0}
    assert {m["mean"] for m in scales[(1, 5)]["models"]} == {4.0}
    assert results["models"] == scales[(1, 5)]["models"]  # the run's own scale, unmixed


def test_the_judge_command_refuses_a_prompt_that_does_not_fit_in_one_line(tiny_model_dir):
    from tests.generation.conftest import register_tiny
    from tests.judging.conftest import study_of

    judge = register_tiny(tiny_model_dir)  # a 512-token context
    study = study_of(models=("short", "long"))
    with pytest.raises(CommandError) as refused:
        call_command(
            "judge",
            "--study",
            study.name,
            "--judge",
            judge.name,
            "--params",
            '{"max_new_tokens": 400}',
            "--wait",
        )
    message = str(refused.value)
    assert message.startswith("the judge prompt does not fit judge 'tiny' by ")
    assert "\n" not in message and "Traceback" not in message
    # The same judge with room for its verdict is accepted.
    call_command(
        "judge",
        "--study",
        study.name,
        "--judge",
        judge.name,
        "--params",
        '{"max_new_tokens": 16}',
    )
