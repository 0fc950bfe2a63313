"""The staff API: /api/benchmark-runs/ (create, read, cancel, retry, results, samples) and
/api/benchmark-tasks/; annotators and staff without the permissions are refused."""

from __future__ import annotations

import json

import pytest

from benchmarks.models import BenchmarkRun
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from tests.conftest import logged_in

from .conftest import bench_staff

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

RUNS = "/api/benchmark-runs/"
TASKS = "/api/benchmark-tasks/"


def _post(client, url, data=None):
    return client.post(url, json.dumps(data or {}), content_type="application/json")


def test_annotators_and_staff_without_permissions_are_refused(
    annotator, bare_staff, staff_user, tiny
):
    run = benchmark_run_create(model=tiny, tasks=["ja_fixture_mc"], enqueue=False)
    for user in (annotator, bare_staff, staff_user):  # staff_user: generation and annotation only
        client = logged_in(user)
        for url in (RUNS, TASKS, f"{RUNS}{run.pk}/", f"{RUNS}{run.pk}/results/",
                    f"{RUNS}{run.pk}/samples/"):  # fmt: skip
            assert client.get(url).status_code == 403, (user, url)
        assert (
            _post(client, RUNS, {"model": tiny.pk, "tasks": ["ja_fixture_mc"]}).status_code == 403
        )
        assert _post(client, f"{RUNS}{run.pk}/cancel/").status_code == 403
    assert BenchmarkRun.objects.count() == 1


def test_viewers_may_read_but_not_queue(django_user_model, tiny):
    client = logged_in(bench_staff(django_user_model, "viewer", run_models=False))
    assert client.get(RUNS).status_code == 200
    assert _post(client, RUNS, {"model": tiny.pk, "tasks": ["ja_fixture_mc"]}).status_code == 403


def test_tasks_are_listed_and_a_run_is_created_cancelled_and_retried(django_user_model, tiny):
    client = logged_in(bench_staff(django_user_model))
    tasks = {row["name"]: row for row in client.get(TASKS).json()}
    assert tasks["ja_fixture_mc"]["output_type"] == "multiple_choice"
    assert tasks["japanese_leaderboard"]["kind"] == "group"

    refused = _post(client, RUNS, {"model": tiny.pk, "tasks": ["nope"]})
    assert (
        refused.status_code == 400 and "unknown benchmark task 'nope'" in refused.json()["detail"]
    )
    created = _post(
        client,
        RUNS,
        {"model": tiny.pk, "tasks": ["ja_fixture_gen"], "scoring": "generative", "limit": 2},
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["tasks"], body["scoring"], body["limit"], body["status"]) == (
        ["ja_fixture_gen"], "generative", 2, "queued"
    )  # fmt: skip
    run_url = f"{RUNS}{body['id']}/"
    assert _post(client, f"{run_url}cancel/").json()["status"] == "cancelled"
    assert _post(client, f"{run_url}cancel/").status_code == 409
    assert _post(client, f"{run_url}retry/").json()["status"] == "queued"


@pytest.mark.slow
def test_results_and_samples_filtered_by_task_and_correctness(django_user_model, tiny, inline):
    client = logged_in(bench_staff(django_user_model))
    run = benchmark_run_create(
        model=tiny, tasks=["ja_fixture_mc", "ja_fixture_gen"], limit=4, enqueue=False
    )
    benchmark_run_execute(run.pk)
    results = client.get(f"{RUNS}{run.pk}/results/").json()
    assert [(r["task"], r["metric"], r["scoring"], r["n"]) for r in results] == [
        ("ja_fixture_gen", "exact_match,strip", "generative", 4),
        ("ja_fixture_mc", "acc", "loglikelihood", 4),
    ]
    assert all(r["prompt_format"] == "line_sft v1" and r["harness_version"] for r in results)

    page = client.get(f"{RUNS}{run.pk}/samples/", {"task": "ja_fixture_mc"}).json()
    assert page["count"] == 4
    assert {"prompt", "messages", "target", "output", "correct", "metrics"} <= set(
        page["results"][0]
    )
    right = client.get(f"{RUNS}{run.pk}/samples/", {"task": "ja_fixture_mc", "correct": "true"})
    wrong = client.get(f"{RUNS}{run.pk}/samples/", {"task": "ja_fixture_mc", "correct": "false"})
    assert right.json()["count"] + wrong.json()["count"] == 4
    assert all(s["correct"] for s in right.json()["results"])
    assert not any(s["correct"] for s in wrong.json()["results"])
    assert client.get(f"{RUNS}{run.pk}/samples/", {"correct": "maybe"}).status_code == 400
