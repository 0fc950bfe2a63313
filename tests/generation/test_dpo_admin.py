"""DPO from the admin and the API: the study admin exports votes as preference pairs, the
model admin's fine-tune action and POST /api/finetune-runs/ take method dpo with them, and the
model's admin page and API show its lineage."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from evalsite.accounts.models import AuditEntry
from generation.models import FineTuneRun, PreferenceDataset
from generation.registry import language_model_register
from generation.training.finetune import finetune_run_create
from generation.training.preferences import preference_dataset_create
from tests.annotation.preference_votes import annotators, two_model_study, vote_all
from tests.generation.test_finetune_admin import MODELS_URL, SETTINGS

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

STUDIES_URL = "/admin/annotation/study/"


def _prefs(name: str = "votes") -> PreferenceDataset:
    return preference_dataset_create(
        name=name,
        pairs=[
            {"prompt": f"問い{i}", "chosen": "丁寧に。", "rejected": "さあ。"} for i in range(6)
        ],
        source_study_id=7,
        source_study_name="autumn-study",
    )


def test_the_study_admin_exports_votes_as_preference_pairs(client, staff_user, base):
    study = two_model_study(questions=3, voters=1)
    vote_all(study, annotators(1), lambda person, pos: "a" if pos < 3 else "b")
    client.force_login(staff_user)
    ask = client.post(
        STUDIES_URL, {"action": "export_preferences", ACTION_CHECKBOX_NAME: [study.pk]}
    )
    assert ask.status_code == 200 and 'name="model"' in ask.content.decode()
    response = client.post(
        STUDIES_URL,
        {
            "action": "export_preferences",
            ACTION_CHECKBOX_NAME: [study.pk],
            "apply": "1",
            "model": base.pk,
            "name": "from-admin",
        },
        follow=True,
    )
    assert "3 preference pairs saved as from-admin" in response.content.decode()
    dataset = PreferenceDataset.objects.get(name="from-admin")
    assert dataset.rendered_for == "base" and dataset.source_study_id == study.pk
    assert dataset.pairs.first().prompt.startswith("ユーザー: ")  # base's line_sft template
    entry = AuditEntry.objects.get(action=AuditEntry.Action.PREFERENCES_EXPORT)
    assert entry.actor == staff_user.username
    jsonl = client.get(f"/admin/generation/preferencedataset/{dataset.pk}/pairs.jsonl")
    records = [json.loads(line) for line in jsonl.content.decode().splitlines()]
    assert len(records) == 3 and set(records[0]) >= {"prompt", "chosen", "rejected"}


def test_the_fine_tune_action_queues_a_dpo_run_on_preference_pairs(
    client, admin_user, base, django_capture_on_commit_callbacks
):
    prefs = _prefs()
    client.force_login(admin_user)
    form = {
        **SETTINGS,
        "action": "fine_tune",
        ACTION_CHECKBOX_NAME: [base.pk],
        "apply": "1",
        "method": "dpo",
        "preferences": prefs.pk,
        "dpo_beta": "0.25",
    }
    without = client.post(MODELS_URL, {**form, "preferences": ""})
    assert "choose a preference data set" in without.content.decode()
    assert not FineTuneRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(MODELS_URL, form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    run = FineTuneRun.objects.get()
    assert (run.method, run.preferences, run.dpo_beta) == ("dpo", prefs, 0.25)
    assert not run.sources.exists() and len(callbacks) == 1
    page = client.get(f"/admin/generation/finetunerun/{run.pk}/change/").content.decode()
    assert "preference pairs votes" in page


def _tuned(base, prefs) -> tuple:
    run = finetune_run_create(base_model=base, method="dpo", preferences=prefs, enqueue=False)
    model = language_model_register(
        name="base-dpo", name_or_path=base.name_or_path, base_model=base, adapter_path="ft/a"
    )
    FineTuneRun.objects.filter(pk=run.pk).update(status="succeeded", result_model=model)
    return run, model


def test_the_model_admin_shows_lineage(client, admin_user, base):
    run, model = _tuned(base, _prefs())
    client.force_login(admin_user)
    page = client.get(f"/admin/generation/languagemodel/{model.pk}/change/").content.decode()
    assert (
        f"base -&gt; base-dpo (dpo, run {run.pk}) on preferences votes (6 pairs, votes of study "
        "autumn-study)" in page
    )
    listing = client.get("/admin/generation/languagemodel/").content.decode()
    assert "dpo of base, votes of autumn-study" in listing


def test_the_api_takes_dpo_runs_and_shows_lineage(client, staff_user, base):
    prefs = _prefs()
    client.force_login(staff_user)
    response = client.post(
        "/api/finetune-runs/",
        {"base_model": base.pk, "method": "dpo", "preferences": prefs.pk, "dpo_beta": 0.2},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["preferences"] == prefs.pk and response.json()["datasets"] == []
    refused = client.post(
        "/api/finetune-runs/",
        {"base_model": base.pk, "method": "dpo"},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "choose a preference data set" in str(refused.json())
    FineTuneRun.objects.all().delete()

    run, model = _tuned(base, prefs)
    lineage = client.get(f"/api/models/{model.pk}/").json()["lineage"]
    assert lineage["base_model"] == "base" and lineage["finetune_run_id"] == run.pk
    assert lineage["preferences"]["study_name"] == "autumn-study"
    assert client.get(f"/api/models/{base.pk}/").json()["lineage"]["generations"] == []
    listed = client.get(f"/api/preference-datasets/{prefs.pk}/").json()
    assert listed["pairs"] == 6 and listed["source_study_name"] == "autumn-study"
    jsonl = client.get(f"/api/preference-datasets/{prefs.pk}/jsonl/")
    assert len(jsonl.content.decode().splitlines()) == 6
