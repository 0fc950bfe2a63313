"""Evolution runs on the spine's bases: the admin's cancel and retry actions with their
messages, the read-only run page, and a refused create answered 400 by the API's exception
handler (nothing written). Runs are only queued here (no worker)."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from evalsite.runs.lifecycle import CANNOT_CANCEL
from evolution.models import EvolutionRun
from evolution.runs import NAME_TAKEN, evolution_run_create
from tests.conftest import logged_in
from tests.generation.conftest import register_tiny

from .conftest import evolution_staff

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

RUNS_ADMIN = "/admin/evolution/evolutionrun/"


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_admin_cancels_and_retries_a_run_and_says_why_it_refuses(
    source, tiny_model_dir, admin_user
):
    run = evolution_run_create(source=source, model=register_tiny(tiny_model_dir), enqueue=False)
    client = logged_in(admin_user)
    picked = {ACTION_CHECKBOX_NAME: [run.pk]}

    cancelled = client.post(RUNS_ADMIN, {"action": "cancel_runs", **picked}, follow=True)
    assert f"evolution run {run.pk} cancelled." in _messages(cancelled)
    run.refresh_from_db()
    assert run.status == EvolutionRun.Status.CANCELLED

    again = client.post(RUNS_ADMIN, {"action": "cancel_runs", **picked}, follow=True)
    refusal = CANNOT_CANCEL.format(label="evolution run", id=run.pk, status="cancelled")
    assert refusal in _messages(again)

    retried = client.post(RUNS_ADMIN, {"action": "retry_runs", **picked}, follow=True)
    assert f"evolution run {run.pk} requeued." in _messages(retried)
    run.refresh_from_db()
    assert run.status == EvolutionRun.Status.QUEUED

    listing = client.get(RUNS_ADMIN).content.decode()
    assert "Retry (make the missing items)" in listing
    page = client.get(f"{RUNS_ADMIN}{run.pk}/change/").content.decode()
    assert (
        f'<progress class="run-progress" max="{run.total}" value="0"></progress> '
        f'<span class="run-progress-text">0/{run.total} (0%) items</span>'
    ) in page
    assert client.get(f"{RUNS_ADMIN}add/").status_code == 403  # runs come from their services


def test_a_refused_create_is_a_400_with_the_services_message_and_writes_nothing(
    source, tiny_model_dir, django_user_model
):
    model = register_tiny(tiny_model_dir)
    staff = logged_in(evolution_staff(django_user_model))
    body = {"source": source.pk, "model": model.pk, "name": source.name}
    response = staff.post("/api/evolution-runs/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": NAME_TAKEN.format(name=source.name)}
    assert not EvolutionRun.objects.exists()
