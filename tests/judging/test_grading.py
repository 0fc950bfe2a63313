"""Single-answer grading results: per model a mean score with a seeded bootstrap interval over
questions, counts of graded and unparsable answers, the per-question table; and one grading run
end to end on ELYZA-tasks-100 tasks with a served judge."""

from __future__ import annotations

import re

import numpy as np
import pytest

from judging.engine.bootstrap import bootstrap_means
from judging.grading import grades_csv, grading_results
from judging.models import JudgeRun, Judgment
from judging.runs import judge_run_create, judge_run_execute
from judging.summary import judge_run_summary

from .factories import (
    MODEL_NAMES,
    elyza_questions,
    grading_run,
    idle_judge,
    judge_study,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

# (model index, question position) -> score; None: the judge's reply could not be read.
SCORES = {
    (0, 1): 5,
    (0, 2): 4,
    (0, 3): 5,
    (0, 4): 3,
    (0, 5): 4,
    (1, 1): 2,
    (1, 2): 3,
    (1, 3): None,
    (1, 4): 1,
    (1, 5): 2,
}


def test_each_model_gets_its_mean_score_and_counts():
    study = judge_study(models=2, questions=5)
    results = grading_results(grading_run(study, idle_judge(), SCORES))
    first, second = results["models"]
    assert first["model"] == MODEL_NAMES[0] and second["model"] == MODEL_NAMES[1]
    assert (first["graded"], first["unparsable"], first["mean"]) == (5, 0, 4.2)
    assert (second["graded"], second["unparsable"], second["mean"]) == (4, 1, 2.0)
    assert (results["graded"], results["unparsable"], results["expected"]) == (9, 1, 10)
    assert (results["score_min"], results["score_max"], results["prompt"]) == (
        1,
        5,
        "ja_grading v1",
    )


def test_the_interval_contains_the_mean_and_is_the_same_for_the_same_seed():
    study = judge_study(models=2, questions=5)
    run = grading_run(study, idle_judge(), SCORES)
    results = grading_results(run)
    for model in results["models"]:
        assert model["low"] < model["mean"] < model["high"]
        assert model["low"] >= 1 and model["high"] <= 5
    assert grading_results(run)["models"] == results["models"]
    assert grading_results(run, seed=1)["models"] != results["models"]


def test_the_interval_resamples_whole_questions_as_computed_here_independently():
    study = judge_study(models=2, questions=5)
    results = grading_results(grading_run(study, idle_judge(), SCORES), resamples=500, seed=3)
    # The same resamples drawn here: 500 draws of 5 question positions, with replacement.
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 5, size=(500, 5))
    for index, model in enumerate(results["models"]):
        scores = [SCORES[(index, p)] for p in range(1, 6)]
        means = []
        for draw in draws:
            kept = [scores[q] for q in draw if scores[q] is not None]
            if kept:
                means.append(sum(kept) / len(kept))
        assert model["low"] == pytest.approx(np.percentile(means, 2.5), abs=1e-4)
        assert model["high"] == pytest.approx(np.percentile(means, 97.5), abs=1e-4)


def test_a_model_scored_the_same_everywhere_has_no_spread_and_an_ungraded_one_no_numbers():
    means, low, high = bootstrap_means(
        np.array([[4.0, 0.0], [8.0, 0.0], [4.0, 0.0]]), np.array([[1, 0], [2, 0], [1, 0]])
    )
    assert (means[0], low[0], high[0]) == (4.0, 4.0, 4.0)
    assert np.isnan(means[1]) and np.isnan(low[1]) and np.isnan(high[1])


def test_the_per_question_table_holds_every_score_in_question_order():
    study = judge_study(models=2, questions=5)
    results = grading_results(grading_run(study, idle_judge(), SCORES))
    table = results["questions"]
    assert [row["position"] for row in table] == [1, 2, 3, 4, 5]
    assert table[0]["question"] == "質問1: 朝の散歩を続けるこつは？"
    for row in table:
        expected = {MODEL_NAMES[m]: SCORES[(m, row["position"])] for m in (0, 1)}
        assert row["scores"] == expected
    assert table[2]["scores"][MODEL_NAMES[1]] is None  # unparsable


def test_the_csv_has_a_column_per_model_and_blanks_for_unparsable_replies():
    study = judge_study(models=2, questions=5)
    text = grades_csv(grading_results(grading_run(study, idle_judge(), SCORES)))
    lines = text.splitlines()
    assert lines[0] == f"position,turn,question,{MODEL_NAMES[0]},{MODEL_NAMES[1]}"
    assert lines[1] == "1,1,質問1: 朝の散歩を続けるこつは？,5,2"
    assert lines[3] == "3,1,質問3: 朝の散歩を続けるこつは？,5,"
    assert len(lines) == 6


def test_a_model_not_graded_yet_is_absent_from_its_rows_and_has_no_mean():
    study = judge_study(models=2, questions=2)
    partial = {(0, 1): 3, (0, 2): 5}
    results = grading_results(grading_run(study, idle_judge(), partial))
    assert results["models"][1] == {
        "model": MODEL_NAMES[1],
        "label": MODEL_NAMES[1],
        "graded": 0,
        "unparsable": 0,
        "mean": None,
        "low": None,
        "high": None,
    }
    assert all(MODEL_NAMES[1] not in row["scores"] for row in results["questions"])


def test_a_pairwise_run_has_no_grades():
    run = judge_run_create(judge=idle_judge(), study=judge_study(), enqueue=False)
    with pytest.raises(ValueError, match=f"judge run {run.pk} is a pairwise run"):
        grading_results(run)


# --- end to end: ELYZA-tasks-100 graded by a served judge --------------------------------------

ELYZA_TASKS = 4
ANSWERS = {0: "丁寧に答えます: {n}", 1: "short {n}"}


def _score_reply(prompt: str, nth: int) -> str:
    """The canned grader: 4 for a Japanese answer, 1 for one that is not; the answer of task 3
    by model 1 always gets a reply with no score in it (unparsable after every try)."""
    answer = re.search(r"\[回答\]\n(.*?)\n", prompt).group(1)
    if answer == "short 3":
        return "採点できません。"
    score = 4 if answer.startswith("丁寧") else 1
    return f"模範解答と比べました。\n評価: {score}"


def test_a_grading_run_on_elyza_tasks_scores_every_answer_against_its_reference(
    canned_judge, served_judge
):
    questions = elyza_questions(ELYZA_TASKS)
    study = judge_study(
        models=2,
        questions=questions,
        answers=lambda model, position: ANSWERS[model].format(n=position),
    )
    canned_judge.reply = _score_reply
    run = judge_run_create(
        judge=served_judge, study=study, grading=True, max_attempts=2, enqueue=False
    )
    assert run.total == 2 * ELYZA_TASKS
    run = judge_run_execute(run.pk)
    assert run.status == JudgeRun.Status.SUCCEEDED and run.done == run.total

    # Each answer asked once, the unreadable one twice; each prompt shows the task's reference
    # answer and its ELYZA criteria.
    prompts = canned_judge.prompts()
    assert len(prompts) == 2 * ELYZA_TASKS + 1
    for parsed in questions:
        asked = [p for p in prompts if parsed.text in p]
        assert len(asked) in (2, 3)
        assert all(parsed.reference in p and parsed.criteria in p for p in asked)
    assert judge_run_summary(run) == {"graded": 7, "unparsable": 1, "expected": 8}
    failed = Judgment.objects.get(run=run, verdict=Judgment.Verdict.UNPARSABLE)
    assert (failed.attempts, failed.outputs) == (2, ["採点できません。"] * 2)

    results = grading_results(run)
    good, poor = results["models"]
    assert (good["graded"], good["mean"], good["low"], good["high"]) == (4, 4.0, 4.0, 4.0)
    assert (poor["graded"], poor["unparsable"], poor["mean"]) == (3, 1, 1.0)
    assert [row["position"] for row in results["questions"]] == [1, 2, 3, 4]
    assert results["questions"][2]["scores"] == {MODEL_NAMES[0]: 4, MODEL_NAMES[1]: None}
