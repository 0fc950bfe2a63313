"""A benchmark run split into shards (ranges of its tasks), executed shard by shard in this
process on the tiny model: each task scored once, by its own shard, and the same figures as the
run in one piece."""

from __future__ import annotations

import pytest

from benchmarks.models import BenchmarkResult, BenchmarkRun
from benchmarks.runs import BENCHMARK_RUN, benchmark_run_create
from evalsite.runs import lifecycle, shards
from evalsite.runs.models import RunShard

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

TASKS = ["ja_fixture_mc", "ja_fixture_gen"]


def _figures(run) -> dict[tuple[str, str], float]:
    return {(r.task, r.metric): r.value for r in BenchmarkResult.objects.filter(run=run)}


def test_each_task_is_scored_once_by_its_shard_with_the_figures_of_the_whole_run(tiny, inline):
    options = {"model": tiny, "tasks": TASKS, "num_fewshot": 1, "limit": 4, "seed": 3}
    run = benchmark_run_create(**options, enqueue=False, shards=2)
    assert [(s.start, s.stop) for s in shards.of_run(run).order_by("index")] == [(0, 1), (1, 2)]

    lifecycle.execute(BENCHMARK_RUN, run.pk, 1)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.RUNNING and run.done == 1
    assert set(run.results.values_list("task", flat=True)) == {"ja_fixture_gen"}
    lifecycle.execute(BENCHMARK_RUN, run.pk, 0)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.SUCCEEDED, run.error
    assert (run.done, run.total) == (2, 2)
    assert {s.status for s in shards.of_run(run)} == {RunShard.Status.SUCCEEDED}

    whole = benchmark_run_create(**options, enqueue=False)
    lifecycle.execute(BENCHMARK_RUN, whole.pk)
    assert _figures(run) == _figures(whole) and len(_figures(run)) >= 2
