"""Provenance that holds: a started run's template, parameters and model cannot be changed (the
admin shows them read-only, the API refuses with 409, any other save is refused); a tuned model
pins the template version it trained with; every change to what a model generates with is
audited."""

from __future__ import annotations

import pytest
from django.conf import settings

from evalsite.accounts.models import AuditEntry
from evalsite.errors import StateConflict
from evalsite.runs.provenance import PROVENANCE_KEPT
from generation.models import FineTuneRun, GenerationRun, LanguageModel
from generation.registry import language_model_register, language_model_update
from generation.templates import template_create, template_for, template_update
from generation.training.finetune import _finetune_register
from tests.conftest import logged_in

from .work import one_of_every_kind

pytestmark = pytest.mark.django_db


def _other_template():
    return template_create(name="kogera-chat", user_template="ユーザー: {content}")


def test_a_started_runs_template_cannot_be_changed_in_the_admin(admin_user):
    work = one_of_every_kind()
    run, other = work.generation, _other_template()
    url = f"/admin/generation/generationrun/{run.pk}/change/"
    client = logged_in(admin_user)
    page = client.get(url).content.decode()
    # Shown, never offered as an input.
    assert "line_sft v1" in page
    for field in ("template", "params", "model", "seed"):
        assert f'name="{field}"' not in page, field
    response = client.post(
        url,
        {"template": other.pk, "params": '{"temperature": 1.5}', "model": work.model.pk},
    )
    assert response.status_code in (200, 302)
    run.refresh_from_db()
    assert run.template.name == "line_sft" and run.params == {"temperature": 0.7}


def test_a_started_runs_template_cannot_be_changed_through_the_api(admin_user):
    work = one_of_every_kind()
    run, other = work.generation, _other_template()
    client = logged_in(admin_user)
    for method in (client.patch, client.put):
        refused = method(
            f"/api/runs/{run.pk}/", {"template": other.pk}, content_type="application/json"
        )
        assert refused.status_code == 409
        assert f"generation run {run.pk} has started (running)" in refused.json()["detail"]
        assert "(template)" in refused.json()["detail"]
    judge = client.patch(
        f"/api/judge-runs/{work.judge.pk}/",
        {"params": {"temperature": 1.0}, "prompt": work.grading.prompt_id},
        content_type="application/json",
    )
    assert judge.status_code == 409 and "(prompt, params)" in judge.json()["detail"]
    # A queued run is not edited either, but nothing of it has been used: 400, not 409.
    queued = client.patch(
        f"/api/finetune-runs/{work.finetune.pk}/",
        {"learning_rate": 0.1},
        content_type="application/json",
    )
    assert queued.status_code == 400 and "cancel it and create another" in queued.json()["detail"]
    run.refresh_from_db()
    assert run.template.name == "line_sft"


def test_no_save_changes_a_started_runs_provenance_but_a_run_may_record_its_template_once():
    work = one_of_every_kind()
    run = GenerationRun.objects.get(pk=work.generation.pk)
    run.template = _other_template()
    with pytest.raises(StateConflict, match="has started") as refused:
        run.save()
    assert str(refused.value) == PROVENANCE_KEPT.format(
        label="generation run", id=run.pk, status="running", fields="template"
    )
    run = GenerationRun.objects.get(pk=work.generation.pk)
    run.done = 4
    run.save(update_fields=["done"])  # progress is not provenance
    # A retried run is queued again, but it has output: still kept.
    GenerationRun.objects.filter(pk=run.pk).update(status="queued")
    run = GenerationRun.objects.get(pk=run.pk)
    run.params = {"temperature": 0.1}
    with pytest.raises(StateConflict):
        run.save()
    # Recording the version it renders with, at its start, is filling an empty field.
    fresh = GenerationRun.objects.create(
        model=work.model, prompt_set=work.generation.prompt_set, total=10
    )
    fresh.status, fresh.template = "running", template_for(work.model)
    fresh.save()
    assert GenerationRun.objects.get(pk=fresh.pk).template.name == "line_sft"


def test_a_tuned_model_generates_with_the_template_version_it_was_trained_with():
    base = language_model_register(name="kogera-base", name_or_path="kogera/base")
    trained_with = template_for(base)
    run = FineTuneRun.objects.create(
        base_model=base,
        status=FineTuneRun.Status.RUNNING,
        worker="gpu-1",
        template=trained_with,
        model_name="kogera-tuned",
    )
    _finetune_register(run, str(settings.MODEL_STORAGE / "kogera-tuned"), "gpu-1")
    tuned = LanguageModel.objects.get(name="kogera-tuned")
    assert tuned.prompt_template == trained_with

    # Someone edits the template afterwards: a new version, which the base model now uses...
    edited = template_update(template=trained_with, changes={"system_prompt": "丁寧に答えて。"})
    assert edited.pk != trained_with.pk and edited.version == trained_with.version + 1
    assert template_for(LanguageModel.objects.get(pk=base.pk)) == edited
    # ...while the tuned model keeps generating with the version it learned.
    assert template_for(LanguageModel.objects.get(pk=tuned.pk)) == trained_with


def test_a_pin_belongs_to_the_models_template_name():
    model = language_model_register(name="kogera-pin", name_or_path="kogera/pin")
    other = _other_template()
    from evalsite.errors import ServiceError

    with pytest.raises(ServiceError, match="is not a version of the model's prompt template"):
        language_model_update(model=model, changes={"prompt_template": other})
    pinned = language_model_update(
        model=model, changes={"prompt_format": "kogera-chat", "prompt_template": other}
    )
    assert template_for(pinned) == other
    # A pinned version is in use even when no run has used it yet: an edit makes a new version.
    edited = template_update(template=other, changes={"user_template": "質問: {content}"})
    assert edited.pk != other.pk
    other.refresh_from_db()
    assert other.user_template == "ユーザー: {content}"
    assert template_for(LanguageModel.objects.get(pk=pinned.pk)) == other
    # A new template name without a new pin drops the old pin.
    unpinned = language_model_update(model=pinned, changes={"prompt_format": "line_sft"})
    assert unpinned.prompt_template is None


def test_every_change_to_what_a_model_generates_with_is_audited(admin_user):
    model = language_model_register(
        name="kogera-audit", name_or_path="kogera/audit", generation_defaults={"max_new_tokens": 64}
    )
    assert not AuditEntry.objects.filter(action="model.generation_change").exists()
    _other_template()
    client = logged_in(admin_user)
    response = client.patch(
        f"/api/models/{model.pk}/",
        {"prompt_format": "kogera-chat", "generation_defaults": {"max_new_tokens": 128}},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    entry = AuditEntry.objects.get(action="model.generation_change")
    assert entry.actor == "admin" and entry.object_id == str(model.pk)
    assert entry.details["fields"] == ["prompt_format", "generation_defaults"]
    assert entry.details["prompt_format"] == {"from": "line_sft", "to": "kogera-chat"}
    assert entry.details["generation_defaults"] == {
        "from": {"max_new_tokens": 64},
        "to": {"max_new_tokens": 128},
    }
    # Weights, through the service the admin's form saves with.
    language_model_update(model=model, changes={"revision": "abc123"}, user=admin_user)
    latest = AuditEntry.objects.filter(action="model.generation_change").first()
    assert latest.details["revision"] == {"from": "", "to": "abc123"}
    # A change that leaves generation alone writes no such entry.
    language_model_update(model=model, changes={"display_label": "Kogera"}, user=admin_user)
    assert AuditEntry.objects.filter(action="model.generation_change").count() == 2
