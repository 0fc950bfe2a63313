"""Finding 1 of the attacker's probe (issue 10): a staff user must not make a worker run code.

A superuser turned ``trust_remote_code`` on for a model; a plain staff user then pointed the
model at a folder holding Python of their own and queued a run, and the worker imported it.
These tests drive the real API and a real worker against a planted folder whose code, when
imported, leaves a marker file.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from generation.models import GenerationRun, LanguageModel, PromptSet
from generation.registry import REMOTE_CODE_CHANGE
from generation.runs import generation_run_create
from tests.conftest import logged_in, wait_for

HUNG = 600


@pytest.fixture
def planted(model_storage, tmp_path):
    """A model folder inside MODEL_STORAGE whose repository code writes ``marker`` on import."""
    folder = model_storage / "uploads" / "planted"
    folder.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "planted-code-ran"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (folder / "planted_code.py").write_text(code)
    auto_map = {
        "AutoConfig": "planted_code.PlantedConfig",
        "AutoModelForCausalLM": "planted_code.PlantedModel",
        "AutoTokenizer": ["planted_code.PlantedTokenizer", None],
    }
    (folder / "config.json").write_text(
        json.dumps({"model_type": "planted_model", "auto_map": auto_map})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PlantedTokenizer", "auto_map": auto_map})
    )
    return "uploads/planted", marker


def _patch(client: Client, model: LanguageModel, **body):
    return client.patch(f"/api/models/{model.pk}/", body, content_type="application/json")


@pytest.mark.django_db
def test_staff_cannot_change_what_a_remote_code_model_loads(admin_user, staff_user, planted):
    path, _ = planted
    response = logged_in(admin_user).post(
        "/api/models/",
        {"name": "remote", "name_or_path": "tiny-0", "trust_remote_code": True},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    model = LanguageModel.objects.get(name="remote")
    staff = logged_in(staff_user)
    for change in (
        {"name_or_path": path},
        {"revision": "main"},
        {"adapter_path": "adapters/x", "base_model": model.pk},
    ):
        response = _patch(staff, model, **change)
        assert response.status_code == 400, change
        expected = REMOTE_CODE_CHANGE.format(name="remote", fields="")[:60]
        assert expected in json.dumps(response.json(), ensure_ascii=False)
    model.refresh_from_db()
    assert (model.name_or_path, model.revision, model.trust_remote_code) == ("tiny-0", "", True)
    # What the worker does not load is still staff's to change.
    assert _patch(staff, model, maker="Acme").status_code == 200


@pytest.mark.django_db
def test_any_change_of_what_is_loaded_turns_remote_code_off_unless_a_superuser_confirms(
    admin_user, planted
):
    path, _ = planted
    admin = logged_in(admin_user)
    model = LanguageModel.objects.create(name="remote", name_or_path="tiny-0")
    LanguageModel.objects.filter(pk=model.pk).update(trust_remote_code=True)
    assert _patch(admin, model, name_or_path=path).status_code == 200
    model.refresh_from_db()
    assert model.name_or_path == path and not model.trust_remote_code
    response = _patch(admin, model, name_or_path="tiny-0", trust_remote_code=True)
    assert response.status_code == 200
    model.refresh_from_db()
    assert model.trust_remote_code


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"name_or_path": "../../etc"},
        {"name_or_path": "models/../../outside"},
        {"name_or_path": "/etc"},
        {"name_or_path": "~/models/x"},
        {"adapter_path": "/root/adapter", "base_model": "BASE"},
        {"adapter_path": "../adapter", "base_model": "BASE"},
    ],
)
def test_paths_outside_model_storage_are_refused(staff_user, body):
    base = LanguageModel.objects.create(name="base", name_or_path="tiny-0")
    target = LanguageModel.objects.create(name="target", name_or_path="tiny-0")
    body = {k: (base.pk if v == "BASE" else v) for k, v in body.items()}
    client = logged_in(staff_user)
    response = client.post(
        "/api/models/",
        {"name": "new", "name_or_path": "tiny-0", **body},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "outside MODEL_STORAGE" in json.dumps(response.json())
    assert not LanguageModel.objects.filter(name="new").exists()
    response = _patch(client, target, **body)
    assert response.status_code == 400
    assert "outside MODEL_STORAGE" in json.dumps(response.json())
    target.refresh_from_db()
    assert (target.name_or_path, target.adapter_path, target.base_model) == ("tiny-0", "", None)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_worker_never_imports_planted_code_without_a_superusers_confirmation(
    celery_worker_factory, admin_user, staff_user, planted, tiny_model_dir
):
    path, marker = planted
    prompt_set = PromptSet.objects.create(name="one")
    prompt_set.questions.create(position=1, text="こんにちは")
    admin, staff = logged_in(admin_user), logged_in(staff_user)
    response = admin.post(
        "/api/models/",
        {"name": "remote", "name_or_path": "tiny-0", "trust_remote_code": True},
        content_type="application/json",
    )
    model = LanguageModel.objects.get(pk=response.json()["id"])
    # The attack of the probe: refused.
    assert _patch(staff, model, name_or_path=path).status_code == 400
    # A superuser's edit without re-confirming: the flag goes off, so the run cannot import.
    assert _patch(admin, model, name_or_path=path).status_code == 200
    worker = celery_worker_factory()
    run = generation_run_create(model=model, prompt_set=prompt_set, params={"max_new_tokens": 4})
    wait_for(
        lambda: GenerationRun.objects.get(pk=run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"run to finish; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED
    assert "trust_remote_code" in run.error
    assert not marker.exists(), "the worker imported the planted code"
    # Control: the same folder, confirmed by a superuser, is imported (the test can fail).
    assert _patch(admin, model, trust_remote_code=True).status_code == 200
    again = generation_run_create(model=model, prompt_set=prompt_set)
    wait_for(
        lambda: GenerationRun.objects.get(pk=again.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"second run to finish; worker log:\n{worker.log_tail()}",
    )
    assert marker.exists()


def _admin_form(model: LanguageModel, **changes) -> dict:
    values = {
        "name": model.name,
        "name_or_path": model.name_or_path,
        "revision": model.revision,
        "maker": model.maker,
        "prompt_format": model.prompt_format,
        "generation_defaults": json.dumps(model.generation_defaults),
        "base_model": "",
        "adapter_path": model.adapter_path,
        **changes,
    }
    if model.trust_remote_code and "trust_remote_code" not in changes:
        values["trust_remote_code"] = "on"
    return {k: v for k, v in values.items() if v is not False}


@pytest.mark.django_db
def test_the_admin_applies_the_same_rule(admin_user, staff_user, planted):
    path, _ = planted
    model = LanguageModel.objects.create(name="remote", name_or_path="tiny-0")
    LanguageModel.objects.filter(pk=model.pk).update(trust_remote_code=True)
    model.refresh_from_db()
    url = f"/admin/generation/languagemodel/{model.pk}/change/"
    # Staff: what the worker loads is read-only on this model, so a posted path is ignored.
    staff = logged_in(staff_user)
    page = staff.get(url).content.decode()
    assert 'name="name_or_path"' not in page and 'name="trust_remote_code"' not in page
    staff.post(url, _admin_form(model, name_or_path=path, maker="Acme"))
    model.refresh_from_db()
    assert (model.name_or_path, model.maker, model.trust_remote_code) == ("tiny-0", "Acme", True)
    # A superuser's change of the path without re-ticking the flag turns it off.
    admin = logged_in(admin_user)
    response = admin.post(url, _admin_form(model, name_or_path=path, trust_remote_code=False))
    assert response.status_code == 302
    model.refresh_from_db()
    assert model.name_or_path == path and not model.trust_remote_code
    # Paths out of MODEL_STORAGE and hostile JSON are form errors, never stored, never a 500.
    for change in (
        {"name_or_path": "/etc"},
        {"generation_defaults": "[" * 100_000 + "]" * 100_000},
        {"generation_defaults": '{"temperature": "\\ud800"}'},
        {"generation_defaults": '{"max_new_tokens": 100000}'},
    ):
        response = admin.post(url, _admin_form(model, **change))
        assert response.status_code == 200, change
        assert "errornote" in response.content.decode()
    model.refresh_from_db()
    assert model.name_or_path == path and model.generation_defaults == {}
