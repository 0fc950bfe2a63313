"""The team's own multiple-choice and generative tasks (fixtures/benchmarks: lm-eval YAML and
local JSONL) through a real Celery worker on the `gpu` queue, on the tiny model, in both
scoring modes; then a worker killed with -9 part-way and the run resumed by another one
without a task scored twice."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.models import BenchmarkResult, BenchmarkRun, BenchmarkSample
from benchmarks.runs import benchmark_run_create
from tests.conftest import wait_for
from tests.generation.conftest import kill_mid_run

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 900
TASKS = ["ja_fixture_mc", "ja_fixture_gen"]


def _run(run_id: int) -> BenchmarkRun:
    return BenchmarkRun.objects.get(pk=run_id)


def _finished(run_id: int, worker) -> BenchmarkRun:
    wait_for(
        lambda: _run(run_id).status not in BenchmarkRun.ACTIVE,
        timeout=HUNG,
        message=f"benchmark run {run_id} to finish; worker log:\n{worker.log_tail()}",
    )
    run = _run(run_id)
    assert run.status == BenchmarkRun.Status.SUCCEEDED, run.error + worker.log_tail()
    return run


def test_both_custom_tasks_run_in_the_gpu_worker_in_both_scoring_modes(shared_worker, tiny):
    import lm_eval

    worker = shared_worker("gpu")
    by_loglikelihood = benchmark_run_create(
        model=tiny, tasks=TASKS, num_fewshot=1, scoring="loglikelihood", limit=4, seed=3
    )
    by_writing = benchmark_run_create(
        model=tiny, tasks=TASKS, num_fewshot=1, scoring="generative", limit=4, seed=3
    )
    for run in (_finished(by_loglikelihood.pk, worker), _finished(by_writing.pk, worker)):
        assert (run.done, run.total, run.attempts) == (2, 2, 1)
        assert run.harness_version == f"lm_eval {lm_eval.__version__}"
        assert "fixtures/benchmarks" in run.task_source

    def stored(run):
        return {(r.task, r.metric): r for r in BenchmarkResult.objects.filter(run=run)}

    ll, gen = stored(by_loglikelihood), stored(by_writing)
    # The multiple-choice task: the most likely option, or a written answer matched to it.
    mc_ll, mc_gen = ll[("ja_fixture_mc", "acc")], gen[("ja_fixture_mc", "exact_match,strip")]
    assert (mc_ll.scoring, mc_gen.scoring) == ("loglikelihood", "generative")
    assert mc_ll.config["output_type"] == "multiple_choice"
    assert mc_gen.config["output_type"] == "generate_until"
    assert mc_gen.config["metadata"]["scored_as"] == "generative variant of a multiple-choice task"
    # The generative task generates whatever the run asked for.
    for rows in (ll, gen):
        result = rows[("ja_fixture_gen", "exact_match,strip")]
        assert result.scoring == "generative"
        assert result.config["generation_kwargs"]["until"] == ["\n"]
    for result in [*ll.values(), *gen.values()]:
        assert (result.n, result.num_fewshot, result.prompt_format) == (
            4, 1, "line_sft v1, few-shot as turns"
        )  # fmt: skip
        assert result.harness_version == f"lm_eval {lm_eval.__version__}"
        assert 0.0 <= result.value <= 1.0 and result.stderr is not None
        assert result.config["num_fewshot"] == 1
        assert result.config["dataset_kwargs"]["data_files"]["test"].endswith(
            f"fixtures/benchmarks/{result.task}.jsonl"
        )
    assert set(ll) == {("ja_fixture_mc", "acc"), ("ja_fixture_gen", "exact_match,strip")}

    # Per-example outputs: the prompt with its one shot, the target, the output, right or wrong.
    # Rendered by the model's template (line_sft), the shot as an earlier exchange.
    samples = {(s.run_id, s.task, s.doc_id): s for s in BenchmarkSample.objects.all()}
    assert len(samples) == 16
    chosen = samples[(by_loglikelihood.pk, "ja_fixture_mc", 0)]
    assert chosen.prompt.startswith("ユーザー: 質問：")
    assert chosen.prompt.endswith(
        "ユーザー: 質問：日本で一番高い山はどれですか。\n選択肢：富士山、北岳、槍ヶ岳、阿蘇山\n"
        "答え：\nシステム: "
    )
    assert chosen.prompt.count("質問：") == 2  # one shot, then the question
    assert [m["role"] for m in chosen.messages] == ["user", "assistant", "user"]
    assert chosen.target == "富士山"
    assert chosen.output in chosen.metrics["choices"] == ["富士山", "北岳", "槍ヶ岳", "阿蘇山"]
    assert chosen.correct == (chosen.output == "富士山") == (chosen.metrics["acc"] == 1.0)
    written = samples[(by_writing.pk, "ja_fixture_mc", 0)]
    assert written.prompt == chosen.prompt and written.target == "富士山"
    assert written.correct == (written.output.strip() == "富士山")
    answer = samples[(by_writing.pk, "ja_fixture_gen", 0)]
    assert answer.target == "7" and "\n" not in answer.output
    # The accuracy is the mean of the stored examples' correctness.
    for run, key in ((by_loglikelihood, ("ja_fixture_mc", "acc")),):
        rows = [s for s in samples.values() if s.run_id == run.pk and s.task == key[0]]
        assert ll[key].value == sum(s.correct for s in rows) / len(rows)


def test_a_killed_worker_s_run_resumes_without_scoring_a_task_twice(celery_worker_factory, tiny):
    # Each worker also consumes `default`, where the stale-run check (beat) requeues the run.
    first = celery_worker_factory("gpu,default")
    run = benchmark_run_create(
        model=tiny,
        tasks=TASKS,
        scoring="generative",
        params={"max_gen_toks": 128},
        batch_size=2,
    )
    kill_mid_run(first, lambda: _run(run.pk).done >= 1, "the first task", timeout=HUNG)
    stopped = _run(run.pk)
    assert stopped.status == BenchmarkRun.Status.RUNNING and stopped.done == 1
    kept = dict(BenchmarkResult.objects.filter(run=run).values_list("pk", "value"))
    kept_samples = set(BenchmarkSample.objects.filter(run=run).values_list("pk", flat=True))
    assert BenchmarkResult.objects.filter(run=run).values("task").distinct().count() == 1

    second = celery_worker_factory("gpu,default")
    run = _finished(run.pk, second)
    assert (run.done, run.total) == (2, 2) and run.attempts >= 2
    results = list(BenchmarkResult.objects.filter(run=run))
    assert Counter((r.task, r.metric) for r in results) == {
        ("ja_fixture_mc", "exact_match,strip"): 1,
        ("ja_fixture_gen", "exact_match,strip"): 1,
    }
    assert {r.pk: r.value for r in results if r.pk in kept} == kept  # untouched
    samples = BenchmarkSample.objects.filter(run=run)
    assert Counter(samples.values_list("task", flat=True)) == {
        "ja_fixture_mc": 10,
        "ja_fixture_gen": 10,
    }
    assert kept_samples <= set(samples.values_list("pk", flat=True))
