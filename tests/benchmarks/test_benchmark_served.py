"""A served model (`transformers serve` over the tiny model, an OpenAI-compatible server the
test starts) benchmarked generatively through lm-eval's local-chat-completions; log-likelihood
scoring of it is refused up front, saying why."""

from __future__ import annotations

import pytest

from benchmarks.models import BenchmarkResult, BenchmarkRun, BenchmarkSample
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from evalsite.errors import ServiceError
from generation.registry import language_model_register

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.postgres]


def test_a_served_model_runs_both_custom_tasks_generatively(tiny_server, inline):
    served = language_model_register(
        name="served-tiny",
        endpoint_url=tiny_server.url,
        endpoint_model=tiny_server.model_id,
        endpoint_concurrency=2,
    )
    with pytest.raises(ServiceError, match="returns no log-likelihoods"):
        benchmark_run_create(model=served, tasks=["ja_fixture_mc"], enqueue=False)
    run = benchmark_run_create(
        model=served,
        tasks=["ja_fixture_mc", "ja_fixture_gen"],
        scoring="generative",
        limit=2,
        params={"max_gen_toks": 16},
        enqueue=False,
    )
    benchmark_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.SUCCEEDED, run.error
    results = BenchmarkResult.objects.filter(run=run).order_by("task")
    assert [(r.task, r.metric, r.scoring, r.n) for r in results] == [
        ("ja_fixture_gen", "exact_match,strip", "generative", 2),
        ("ja_fixture_mc", "exact_match,strip", "generative", 2),
    ]
    assert {r.prompt_format for r in results} == {"chat (the server's template)"}
    samples = BenchmarkSample.objects.filter(run=run)
    assert samples.count() == 4
    # Chat requests: lm-eval sends the prompt as messages; the stored prompt is what it sent.
    assert all(
        "日本" in s.prompt or "質問" in s.prompt for s in samples.filter(task="ja_fixture_mc")
    )
    assert all(s.correct is not None for s in samples)
