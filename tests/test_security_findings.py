"""The findings of the attacker's probe (issue 10), each driven through the real endpoints.

Each test failed on the code the probe ran against and passes now; together with
tests/test_security.py they are the security pass.
"""

from __future__ import annotations

import base64
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client

from evalsite import auth, jsonguard
from generation.models import InstructionDataset, LanguageModel, PromptSet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- 2. look-alike usernames and the sign-in limit ---------------------------------------------


LOOK_ALIKES = ["ａnnotator", "𝐚nnotator", "ANNOTATOR", " annotator"]


def test_look_alike_usernames_count_against_the_same_user(client, annotator, settings):
    settings.LOGIN_FAILURE_LIMIT = len(LOOK_ALIKES)
    for variant in LOOK_ALIKES:
        response = client.post("/accounts/login/", {"username": variant, "password": "wrong"})
        assert response.status_code == 200
    # Blocked under every spelling, the right password included.
    for variant in ["annotator", "ａnnotator", "𝐚nnotator"]:
        response = client.post(
            "/accounts/login/", {"username": variant, "password": "annotator-pass"}
        )
        assert response.status_code == 429, variant
        assert auth.TOO_MANY_ATTEMPTS.split(";")[0] in response.content.decode()


def test_a_password_spray_from_one_address_is_stopped(client, annotator, other_annotator, settings):
    settings.LOGIN_FAILURE_LIMIT = 100
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 5
    for n in range(5):
        response = client.post("/accounts/login/", {"username": f"user{n}", "password": "guess"})
        assert response.status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "other_annotator", "password": "other_annotator-pass"}
    )
    assert response.status_code == 429
    assert auth.TOO_MANY_FROM_ADDRESS.split(";")[0] in response.content.decode()
    # Another address is not affected.
    elsewhere = Client(REMOTE_ADDR="192.0.2.7")
    response = elsewhere.post(
        "/accounts/login/", {"username": "other_annotator", "password": "other_annotator-pass"}
    )
    assert response.status_code == 302


def test_the_username_is_normalised_as_the_backend_sees_it():
    assert auth.normalized_username("ａnn3") == auth.normalized_username("ann3")
    assert auth.normalized_username("𝐚nn3") == "ann3"
    assert auth.normalized_username("Ann3 ") == "ann3"


# --- 3. HTTP Basic authentication --------------------------------------------------------------


def test_basic_authentication_is_not_accepted_by_the_api(admin_user):
    client = Client()
    header = _basic("admin", "admin-pass")
    assert client.get("/api/models/", HTTP_AUTHORIZATION=header).status_code in (401, 403)
    response = client.post(
        "/api/models/",
        {"name": "via-basic", "name_or_path": "x", "prompt_format": "plain"},
        content_type="application/json",
        HTTP_AUTHORIZATION=header,
    )
    assert response.status_code in (401, 403)
    assert not LanguageModel.objects.filter(name="via-basic").exists()


# --- 7. the staff API and Django's model permissions -------------------------------------------


def test_staff_without_permissions_can_read_and_change_nothing(client, bare_staff):
    prompt_set = PromptSet.objects.create(name="kept")
    client.force_login(bare_staff)
    for url in ["/api/prompt-sets/", "/api/models/", "/api/runs/", "/api/studies/"]:
        assert client.get(url).status_code == 403, url
    assert client.delete(f"/api/prompt-sets/{prompt_set.pk}/").status_code == 403
    response = client.post(
        "/api/models/",
        {"name": "sneaky", "name_or_path": "x", "prompt_format": "plain"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert PromptSet.objects.filter(pk=prompt_set.pk).exists()
    assert not LanguageModel.objects.exists()


def test_a_view_permission_allows_reading_but_not_deleting(client, bare_staff):
    prompt_set = PromptSet.objects.create(name="kept")
    bare_staff.user_permissions.add(Permission.objects.get(codename="view_promptset"))
    client.force_login(bare_staff)
    assert client.get("/api/prompt-sets/").status_code == 200
    assert client.delete(f"/api/prompt-sets/{prompt_set.pk}/").status_code == 403
    bare_staff.user_permissions.add(Permission.objects.get(codename="delete_promptset"))
    client.force_login(bare_staff)
    assert client.delete(f"/api/prompt-sets/{prompt_set.pk}/").status_code == 204


def _grant(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def test_queueing_gpu_work_needs_the_run_permission(client, bare_staff):
    model = LanguageModel.objects.create(name="m", name_or_path="tiny-0")
    prompt_set = PromptSet.objects.create(name="p")
    prompt_set.questions.create(position=1, text="q")
    _grant(bare_staff, "add_generationrun", "view_generationrun")
    client.force_login(bare_staff)
    body = {"model": model.pk, "prompt_set": prompt_set.pk}
    assert client.post("/api/runs/", body, content_type="application/json").status_code == 403
    _grant(bare_staff, "run_languagemodel")
    client.force_login(bare_staff)
    assert client.post("/api/runs/", body, content_type="application/json").status_code == 201


def test_results_need_the_export_permission_beyond_seeing_the_study(client, bare_staff):
    from annotation.models import Study

    study = Study.objects.create(name="s", prompt_set=PromptSet.objects.create(name="p"))
    _grant(bare_staff, "view_study")
    client.force_login(bare_staff)
    assert client.get(f"/api/studies/{study.pk}/").status_code == 200
    for url in (
        f"/api/studies/{study.pk}/results/",
        f"/api/studies/{study.pk}/export/votes/",
        f"/studies/{study.pk}/results/",
        f"/studies/{study.pk}/results/download/votes/",
    ):
        assert client.get(url).status_code == 403, url
    assert client.post(f"/api/studies/{study.pk}/close/").status_code == 403
    _grant(bare_staff, "export_study")
    client.force_login(bare_staff)
    assert client.get(f"/api/studies/{study.pk}/export/votes/").status_code == 200


# --- 8. bad input never gives a server error ---------------------------------------------------


DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_json_bodies_are_a_400(client, staff_user):
    client.force_login(staff_user)
    response = client.post("/api/models/", DEEP, content_type="application/json")
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]


def test_a_lone_surrogate_in_an_api_body_is_a_400(client, staff_user):
    client.force_login(staff_user)
    body = '{"name": "bad\\ud800", "name_or_path": "x", "prompt_format": "plain"}'
    response = client.post("/api/models/", body, content_type="application/json")
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
    assert not LanguageModel.objects.exists()


@pytest.mark.parametrize(
    ("url", "name", "record"),
    [
        ("/api/prompt-sets/import/", "p.jsonl", {"question": "what\ud800"}),
        (
            "/api/instruction-datasets/import/",
            "d.jsonl",
            {"instruction": "do\ud800", "output": "ok"},
        ),
    ],
)
def test_lone_surrogates_and_deep_nesting_in_uploads_are_refused(
    client, staff_user, url, name, record
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(staff_user)
    for content in [json.dumps(record), '{"question": ' + DEEP + "}"]:
        upload = SimpleUploadedFile(name, content.encode(), content_type="application/jsonl")
        response = client.post(url, {"name": "upload", "file": upload})
        assert response.status_code == 400, response.content
        assert "line 1" in json.dumps(response.json())
    assert not PromptSet.objects.exists()
    assert not InstructionDataset.objects.exists()


def test_import_commands_name_the_line_of_a_lone_surrogate(tmp_path):
    from django.core.management import CommandError, call_command

    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine"}\n{"question": "bad \\udfff"}\n', encoding="utf-8")
    with pytest.raises(CommandError, match="line 2: .*lone surrogate"):
        call_command("import_prompts", str(path), "--name", "q")
    assert not PromptSet.objects.exists()


def test_the_json_guard_keeps_ordinary_json_and_surrogate_pairs():
    assert jsonguard.loads('{"a": ["😀", "\\ud83d\\ude00", {"b": "[{"}]}') == {
        "a": ["😀", "😀", {"b": "[{"}]
    }
    with pytest.raises(jsonguard.UnsafeJSON):
        jsonguard.loads("[" * 65 + "]" * 65)
    assert jsonguard.loads("[" * 64 + "]" * 64)


def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(client, staff_user, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    client.force_login(staff_user)
    body = json.dumps({"name": "x" * 200_000})
    response = client.post("/api/models/", body, content_type="application/json")
    assert response.status_code == 413
    assert "over the 1000-byte limit" in response.json()["detail"]


# --- 9. API docs --------------------------------------------------------------------------------


def test_api_docs_and_schema_are_for_staff_only(client, annotator, staff_user):
    client.force_login(annotator)
    assert client.get("/api/docs/").status_code == 403
    assert client.get("/api/schema/").status_code == 403
    client.force_login(staff_user)
    assert client.get("/api/schema/").status_code == 200


def test_api_docs_load_swagger_from_the_app_under_the_policy(client, staff_user):
    client.force_login(staff_user)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn" not in html.lower() and "https://" not in html
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "<script>" not in html  # the bootstrap script is a same-origin file
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert client.options("/api/docs/").status_code == 405


def test_generation_settings_are_checked_by_type_range_and_the_models_context(
    client, staff_user, tiny_model_dir
):
    client.force_login(staff_user)
    response = client.post(
        "/api/models/",
        {"name": "tiny", "name_or_path": tiny_model_dir.name},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    model_id = response.json()["id"]
    for defaults, message in [
        ([1, 2], "JSON object"),
        ({"max_new_tokens": "DROP"}, "max_new_tokens must be"),
        ({"max_new_tokens": 1e9}, "max_new_tokens must be"),
        ({"max_new_tokens": 512}, "context of 512"),  # the tiny model's whole context
        ({"temperature": -1}, "temperature must be"),
    ]:
        response = client.patch(
            f"/api/models/{model_id}/",
            {"generation_defaults": defaults},
            content_type="application/json",
        )
        assert response.status_code == 400, defaults
        assert message in json.dumps(response.json()), response.json()
    assert LanguageModel.objects.get(pk=model_id).generation_defaults == {}
    prompt_set = PromptSet.objects.create(name="p")
    prompt_set.questions.create(position=1, text="q")
    for params, status in [
        ("notadict", 400),
        ({"max_new_tokens": 600}, 400),
        ({"num_beams": 4}, 400),
        ({"max_new_tokens": 64}, 201),
    ]:
        response = client.post(
            "/api/runs/",
            {"model": model_id, "prompt_set": prompt_set.pk, "params": params},
            content_type="application/json",
        )
        assert response.status_code == status, (params, response.content)
