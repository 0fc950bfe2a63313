"""The generation API is for staff only, and runs its writes through the services."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evalsite.errors import ServiceError
from generation.models import GenerationRun, LanguageModel, PromptSet
from generation.registry import REMOTE_CODE_SUPERUSER, language_model_register
from generation.runs import generation_run_create, generation_run_create_imported

pytestmark = pytest.mark.django_db

ENDPOINTS = ["/api/prompt-sets/", "/api/questions/", "/api/models/", "/api/runs/"]


@pytest.fixture
def model():
    return language_model_register(name="tiny", name_or_path="tiny-0")


@pytest.mark.parametrize("url", ENDPOINTS)
def test_anonymous_users_are_refused(client, url):
    assert client.get(url).status_code in (401, 403)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_annotators_are_refused(client, annotator, url):
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    assert client.post(url, {}, content_type="application/json").status_code == 403


def test_staff_can_list_questions_of_a_set(client, staff_user, prompt_set):
    client.force_login(staff_user)
    response = client.get("/api/questions/", {"prompt_set": prompt_set.pk, "limit": 500})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 100
    assert body["results"][0]["position"] == 1


def test_staff_import_a_prompt_set_by_upload(client, staff_user):
    client.force_login(staff_user)
    upload = SimpleUploadedFile("set.csv", "question,category\n質問です,knowledge\n".encode())
    response = client.post("/api/prompt-sets/import/", {"name": "uploaded", "file": upload})
    assert response.status_code == 201, response.content
    assert response.json()["question_count"] == 1


def test_a_bad_upload_is_400_with_the_line_and_changes_nothing(client, staff_user):
    client.force_login(staff_user)
    upload = SimpleUploadedFile("set.jsonl", b'{"text": "ok"}\n{"text": \n')
    response = client.post("/api/prompt-sets/import/", {"name": "bad", "file": upload})
    assert response.status_code == 400
    assert "set.jsonl, line 2: not valid JSON" in response.json()["file"][0]
    assert not PromptSet.objects.filter(name="bad").exists()


def test_staff_register_a_model_but_only_superusers_trust_remote_code(
    client, staff_user, admin_user
):
    client.force_login(staff_user)
    payload = {"name": "m1", "name_or_path": "org/model", "prompt_format": "rinna"}
    assert client.post("/api/models/", payload, content_type="application/json").status_code == 201
    refused = client.post(
        "/api/models/",
        {**payload, "name": "m2", "trust_remote_code": True},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert REMOTE_CODE_SUPERUSER in str(refused.json())
    client.force_login(admin_user)
    allowed = client.post(
        "/api/models/",
        {**payload, "name": "m3", "trust_remote_code": True},
        content_type="application/json",
    )
    assert allowed.status_code == 201
    assert LanguageModel.objects.get(name="m3").trust_remote_code
    assert not LanguageModel.objects.get(name="m1").trust_remote_code


def test_staff_create_a_run_and_read_its_progress(
    client, staff_user, prompt_set, model, django_capture_on_commit_callbacks
):
    client.force_login(staff_user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            "/api/runs/",
            {"model": model.pk, "prompt_set": prompt_set.pk, "seed": 3, "params": {"top_p": 0.9}},
            content_type="application/json",
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["done"], body["total"]) == ("queued", 0, 100)
    assert body["params"] == {"top_p": 0.9}
    assert len(callbacks) == 1  # enqueued once the run row is committed
    progress = client.get(f"/api/runs/{body['id']}/").json()
    assert (progress["done"], progress["total"]) == (0, 100)


def test_unknown_generation_parameters_are_refused(client, staff_user, prompt_set, model):
    client.force_login(staff_user)
    response = client.post(
        "/api/runs/",
        {"model": model.pk, "prompt_set": prompt_set.pk, "params": {"temprature": 0.5}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "unknown generation parameters: temprature" in str(response.json())
    assert not GenerationRun.objects.exists()


def test_cancel_then_retry_through_the_api(client, staff_user, prompt_set, model):
    client.force_login(staff_user)
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    cancelled = client.post(f"/api/runs/{run.pk}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/api/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    retried = client.post(f"/api/runs/{run.pk}/retry/")
    assert retried.json()["status"] == "queued"


def test_a_prompt_set_with_answers_cannot_be_edited_through_the_api(
    client, staff_user, prompt_set, model
):
    question = prompt_set.questions.first()
    generation_run_create_imported(model=model, prompt_set=prompt_set, answers={question.pk: "x"})
    client.force_login(staff_user)
    response = client.patch(
        f"/api/prompt-sets/{prompt_set.pk}/", {"name": "renamed"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert client.delete(f"/api/prompt-sets/{prompt_set.pk}/").status_code == 400


def test_the_openapi_schema_is_served(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/runs/" in response.content


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 7}, "temperature must be from 0 to 5 (got 7)"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number from 1 to 8192 (got 0)"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be a whole number from 1 to 8192"),
        ({"top_p": 1.5}, "top_p must be from 0 to 1 (got 1.5)"),
        ({"top_k": -1}, "top_k must be a whole number, 0 or more (got -1)"),
        ({"do_sample": "yes"}, "do_sample must be true or false (got 'yes')"),
        ({"temperature": "hot"}, "temperature must be from 0 to 5 (got 'hot')"),
    ],
)
def test_out_of_range_generation_parameters_are_refused_by_name(
    client, staff_user, prompt_set, model, params, message
):
    client.force_login(staff_user)
    response = client.post(
        "/api/runs/",
        {"model": model.pk, "prompt_set": prompt_set.pk, "params": params},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert message in str(response.json())
    assert not GenerationRun.objects.exists()


def test_a_run_snapshot_keeps_the_model_defaults_it_overrides_and_may_unset_one(prompt_set):
    model = language_model_register(
        name="m", name_or_path="x", generation_defaults={"max_new_tokens": 64, "top_p": 0.9}
    )
    run = generation_run_create(
        model=model,
        prompt_set=prompt_set,
        params={"max_new_tokens": 8, "top_p": None},
        enqueue=False,
    )
    assert run.params == {"max_new_tokens": 8, "top_p": None}


def test_a_model_cannot_be_registered_with_bad_generation_defaults():
    with pytest.raises(ServiceError, match=r"temperature must be from 0 to 5 \(got -1\)"):
        language_model_register(name="m", name_or_path="x", generation_defaults={"temperature": -1})
    with pytest.raises(ServiceError, match="unknown generation parameters: num_beams"):
        language_model_register(name="m", name_or_path="x", generation_defaults={"num_beams": 4})
    assert not LanguageModel.objects.exists()


def test_a_model_s_generation_defaults_are_checked_on_create_and_update(client, staff_user, model):
    client.force_login(staff_user)
    created = client.post(
        "/api/models/",
        {"name": "m", "name_or_path": "x", "generation_defaults": {"top_k": -2}},
        content_type="application/json",
    )
    assert created.status_code == 400
    assert "top_k must be a whole number, 0 or more (got -2)" in str(created.json())
    updated = client.patch(
        f"/api/models/{model.pk}/",
        {"generation_defaults": {"max_new_tokens": 10000}},
        content_type="application/json",
    )
    assert updated.status_code == 400
    assert "max_new_tokens must be a whole number from 1 to 8192" in str(updated.json())
    model.refresh_from_db()
    assert model.generation_defaults == {}
    fine = client.patch(
        f"/api/models/{model.pk}/",
        {"generation_defaults": {"max_new_tokens": 128, "do_sample": True}},
        content_type="application/json",
    )
    assert fine.status_code == 200, fine.content
