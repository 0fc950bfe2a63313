"""Judge runs split into shards (ranges of comparisons, or of graded answers), executed shard by
shard against the canned judge (a real HTTP server): every verdict once, both orders of a
comparison in one shard, its judge votes made, the success hook called once by the last shard."""

from __future__ import annotations

from collections import Counter

import pytest

from annotation.models import Vote
from evalsite.runs import shards
from evalsite.runs.models import RunShard
from generation.models import Answer
from judging import runs
from judging.models import JudgeRun, Judgment
from judging.runs import judge_run_create, judge_run_execute, on_judge_run_succeeded
from tests.judging.conftest import study_of

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _quiet(settings):
    settings.RUN_HEARTBEAT_INTERVAL = 3600


def _execute_shard(run: JudgeRun, index: int):
    from evalsite.runs import lifecycle

    return lifecycle.execute(runs.JUDGE_RUN, run.pk, index)


def test_a_pairwise_run_in_three_shards_judges_each_comparison_once_per_order(
    served_judge, canned_judge
):
    study = study_of()
    run = judge_run_create(judge=served_judge, study=study, enqueue=False, shards=3)
    rows = list(shards.of_run(run).order_by("index"))
    assert [(s.start, s.stop) for s in rows] == [(0, 4), (4, 8), (8, 12)]
    seen = []
    hook = on_judge_run_succeeded(seen.append)
    try:
        # Out of order, as workers may take them: the run succeeds with its last shard.
        for index in (2, 0):
            assert _execute_shard(run, index) is not None
            run.refresh_from_db()
            assert run.status == JudgeRun.Status.RUNNING and seen == []
        assert run.done == 16
        assert _execute_shard(run, 1) is not None
    finally:
        runs.JUDGE_RUN.on_success.remove(hook)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error
    assert (run.done, run.total) == (24, 24) and seen == [run.pk]
    judgments = Judgment.objects.filter(run=run)
    assert Counter(judgments.values_list("comparison_id", "first")) == {
        (c.pk, first): 1 for c in study.comparisons.all() for first in "ab"
    }
    # Asked once per comparison and order, and each comparison's two judge votes made.
    assert len(canned_judge.prompts()) == len(set(canned_judge.prompts())) == 24
    assert Vote.objects.filter(voter="judge").count() == 24
    assert {s.status for s in shards.of_run(run)} == {RunShard.Status.SUCCEEDED}
    # A finished shard, and the finished run, are not claimed again.
    assert _execute_shard(run, 0) is None and judge_run_execute(run.pk) is None


def test_a_grading_run_split_in_two_grades_each_answer_once(served_judge, canned_judge):
    canned_judge.reply = lambda prompt, nth: "よく書けています。\n評価: 4"
    study = study_of(models=("short", "long"))
    run = judge_run_create(judge=served_judge, study=study, grading=True, enqueue=False, shards=2)
    assert [(s.start, s.stop) for s in shards.of_run(run).order_by("index")] == [(0, 4), (4, 8)]
    # --inline: the unfinished shards one after another in this process.
    assert judge_run_execute(run.pk) is not None
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error
    graded = list(Judgment.objects.filter(run=run).values_list("answer_id", flat=True))
    answers = Answer.objects.filter(run__in=study.runs.all()).values_list("pk", flat=True)
    assert sorted(graded) == sorted(answers) and len(graded) == run.total == 8
