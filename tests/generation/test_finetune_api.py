"""The fine-tune API: staff only; create, read progress and the loss log, cancel, resume."""

from __future__ import annotations

import pytest

from generation.models import FineTuneLog, FineTuneRun
from generation.training.finetune import finetune_run_create

pytestmark = pytest.mark.django_db

RUNS = "/api/finetune-runs/"


@pytest.mark.parametrize("url", [RUNS, "/api/instruction-datasets/"])
def test_only_staff_may_use_it(client, annotator, url):
    assert client.get(url).status_code in (401, 403)
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    assert client.post(url, {}, content_type="application/json").status_code == 403


def test_staff_create_a_run_on_a_mix(
    client, staff_user, base, fixture_dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff_user)
    payload = {
        "base_model": base.pk,
        "datasets": [{"dataset": fixture_dataset.pk, "rows": 50}],
        "method": "lora",
        "max_steps": 20,
        "lora_r": 4,
        "target_modules": ["query_key_value"],
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(RUNS, payload, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["total_steps"] == 20
    assert body["lora_r"] == 4 and body["lora_alpha"] == 16
    assert body["target_modules"] == ["query_key_value"]
    assert body["datasets"] == [
        {"dataset": fixture_dataset.pk, "name": "instructions-ja", "rows": 50}
    ]
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datasets": []}, "may not be empty"),
        ({"learning_rate": -1}, "learning_rate must be above 0"),
        ({"datasets": [{"dataset": 0}]}, "does not exist"),
        ({"method": "rlhf"}, "is not a valid choice"),
    ],
)
def test_a_bad_request_is_400_and_creates_nothing(
    client, staff_user, base, fixture_dataset, change, message
):
    client.force_login(staff_user)
    payload = {"base_model": base.pk, "datasets": [{"dataset": fixture_dataset.pk}], **change}
    response = client.post(RUNS, payload, content_type="application/json")
    assert response.status_code == 400
    assert message in str(response.json())
    assert not FineTuneRun.objects.exists()


def test_a_run_reads_with_its_progress_and_loss_log(client, staff_user, base, fixture_dataset):
    run = finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], params={"max_steps": 10}, enqueue=False
    )
    FineTuneRun.objects.filter(pk=run.pk).update(status="running", step=4)
    for step in range(1, 5):
        FineTuneLog.objects.create(
            run=run, kind="train", step=step, loss=3 - step / 10, learning_rate=1e-4, epoch=0.1
        )
    FineTuneLog.objects.create(run=run, kind="eval", step=4, loss=2.9, epoch=1.0)
    client.force_login(staff_user)
    body = client.get(f"{RUNS}{run.pk}/").json()
    assert body["progress"] == 0.4 and body["step"] == 4
    assert [e["step"] for e in body["loss_log"]] == [1, 2, 3, 4]
    assert body["loss_log"][0] == {"step": 1, "loss": 2.9, "learning_rate": 1e-4, "epoch": 0.1}
    assert body["eval_log"] == [{"step": 4, "loss": 2.9, "epoch": 1.0}]
    newer = client.get(f"{RUNS}{run.pk}/", {"log_after": 2}).json()
    assert [e["step"] for e in newer["loss_log"]] == [3, 4]
    listing = client.get(RUNS).json()
    assert listing["count"] == 1 and "loss_log" not in listing["results"][0]


def test_cancel_then_resume(client, staff_user, base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    client.force_login(staff_user)
    response = client.post(f"{RUNS}{run.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"{RUNS}{run.pk}/cancel/").status_code == 409
    response = client.post(f"{RUNS}{run.pk}/resume/")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    conflict = client.post(f"{RUNS}{run.pk}/resume/")
    assert conflict.status_code == 409
    assert "only failed or cancelled runs can be resumed" in conflict.json()["detail"]


def test_data_sets_list_with_their_statistics(client, staff_user, fixture_dataset):
    client.force_login(staff_user)
    body = client.get("/api/instruction-datasets/").json()
    assert body["results"][0]["stats"]["rows"] == fixture_dataset.stats["rows"]


def test_the_schema_describes_the_new_endpoints(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/finetune-runs/",
        "/api/finetune-runs/{id}/cancel/",
        "/api/finetune-runs/{id}/resume/",
        "/api/instruction-datasets/import/",
        "/api/instruction-datasets/{id}/augment/",
    ):
        assert path in paths
