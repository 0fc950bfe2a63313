"""The admin: "Run benchmarks…" on models (an intermediate page for tasks, few-shot count,
scoring and limit), a run with its results, its examples filtered by task and correctness, and
cancel / retry."""

from __future__ import annotations

import pytest
from django.contrib.admin import helpers

from benchmarks.models import BenchmarkRun
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from evalsite.accounts.models import AuditEntry
from tests.conftest import logged_in

from .conftest import bench_staff

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MODELS = "/admin/generation/languagemodel/"
RUNS = "/admin/benchmarks/benchmarkrun/"
SAMPLES = "/admin/benchmarks/benchmarksample/"


def test_the_model_action_asks_for_tasks_then_queues_a_run(django_user_model, tiny):
    client = logged_in(bench_staff(django_user_model))
    selected = {"action": "run_benchmarks", helpers.ACTION_CHECKBOX_NAME: [tiny.pk]}
    page = client.post(MODELS, selected)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Run benchmarks" in text
    assert "ja_fixture_mc (multiple_choice, custom)" in text
    assert "japanese_leaderboard (group: 8 tasks)" in text
    assert not BenchmarkRun.objects.exists()

    chosen = {
        "tasks": ["ja_fixture_mc", "ja_fixture_gen"],
        "num_fewshot": 2,
        "scoring": "generative",
        "limit": 5,
        "prompt": "template",
        "apply": "1",
    }
    response = client.post(MODELS, {**selected, **chosen}, follow=True)
    run = BenchmarkRun.objects.get()
    assert (run.model, run.tasks, run.num_fewshot, run.scoring, run.limit) == (
        tiny, ["ja_fixture_mc", "ja_fixture_gen"], 2, "generative", 5
    )  # fmt: skip
    assert run.status == BenchmarkRun.Status.QUEUED and run.created_by.username == "operator"
    assert f"Queued benchmark run {run.pk}: tiny on ja_fixture_mc, ja_fixture_gen" in (
        response.content.decode()
    )
    assert AuditEntry.objects.filter(action=AuditEntry.Action.BENCHMARK_RUN_START).count() == 1


def test_staff_who_may_not_run_models_are_not_offered_benchmarks(django_user_model, tiny):
    client = logged_in(bench_staff(django_user_model, "viewer", run_models=False))
    page = client.get(MODELS)
    assert page.status_code == 200
    assert "Run benchmarks" not in page.content.decode()


@pytest.mark.slow
def test_a_run_shows_its_results_and_its_examples_filtered(django_user_model, tiny, inline):
    client = logged_in(bench_staff(django_user_model))
    run = benchmark_run_create(model=tiny, tasks=["ja_fixture_mc", "ja_fixture_gen"], limit=3,
                               enqueue=False)  # fmt: skip
    benchmark_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.SUCCEEDED, run.error
    page = client.get(f"{RUNS}{run.pk}/change/").content.decode()
    assert "exact_match,strip" in page and run.harness_version in page
    assert "log-likelihood (most likely option)" in page  # the mc task's scoring
    assert "generative (generate, then match)" in page  # the generative task's
    assert f"?run__id__exact={run.pk}" in page and "6 examples" in page

    every = client.get(SAMPLES, {"run__id__exact": run.pk}).content.decode()
    assert every.count("質問：") >= 6
    only_mc = client.get(SAMPLES, {"run__id__exact": run.pk, "task": "ja_fixture_mc"})
    text = only_mc.content.decode()
    assert "3 benchmark samples" in text and "日本で一番高い山" in text
    wrong = run.samples.filter(correct=False).count()
    listed = client.get(SAMPLES, {"run__id__exact": run.pk, "correct__exact": "0"})
    assert f"{wrong} benchmark sample" in listed.content.decode()


def test_cancel_and_retry_actions(django_user_model, tiny):
    client = logged_in(bench_staff(django_user_model))
    run = benchmark_run_create(model=tiny, tasks=["ja_fixture_mc"], enqueue=False)
    picked = {helpers.ACTION_CHECKBOX_NAME: [run.pk]}
    client.post(RUNS, {"action": "cancel_runs", **picked})
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.CANCELLED
    client.post(RUNS, {"action": "retry_runs", **picked})
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.QUEUED
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"benchmark_run.cancel", "benchmark_run.retry"} <= actions
