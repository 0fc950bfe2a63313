"""Security pass: who may reach what, CSRF, login throttling, escaping, deploy settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from evalsite import auth
from evalsite.errors import ServiceError
from generation.importers import ParsedQuestion
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported
from tests.conftest import REPO

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('x')</script>"

STAFF_PAGES = [
    "/admin/",
    "/admin/generation/promptset/",
    "/admin/generation/promptset/import/",
    "/admin/generation/languagemodel/",
    "/admin/generation/generationrun/",
    "/admin/generation/answer/",
    "/admin/annotation/study/",
    "/admin/annotation/vote/",
    "/admin/auth/user/",
]
STAFF_API = [
    "/api/prompt-sets/",
    "/api/questions/",
    "/api/models/",
    "/api/runs/",
]


@pytest.fixture
def hostile_data():
    """A prompt set, a model and an answer whose text is HTML/JavaScript."""
    prompt_set = prompt_set_create(
        name="hostile",
        questions=[
            ParsedQuestion(line=1, text=f"question {SCRIPT}"),
            ParsedQuestion(line=2, text="second"),
        ],
    )
    model = language_model_register(name="hostile-model", name_or_path="x/y")
    question = prompt_set.questions.first()
    run = generation_run_create_imported(
        model=model, prompt_set=prompt_set, answers={question.pk: f"answer {SCRIPT}"}
    )
    return prompt_set, model, run


@pytest.mark.parametrize("url", STAFF_PAGES)
def test_anonymous_users_are_sent_to_login_from_staff_pages(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.parametrize("url", STAFF_PAGES)
def test_annotators_cannot_open_staff_pages(client, annotator, url):
    client.force_login(annotator)
    response = client.get(url)
    assert response.status_code in (302, 403)
    if response.status_code == 302:
        assert "/login/" in response["Location"]


@pytest.mark.parametrize("url", STAFF_API)
def test_annotators_and_anonymous_get_403_from_the_staff_api(client, annotator, url):
    assert client.get(url).status_code in (401, 403)
    client.force_login(annotator)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize(
    ("user", "url", "content_type"),
    [
        ("staff_user", "/api/models/", "application/json"),
        ("admin_user", "/admin/generation/languagemodel/add/", None),
    ],
    ids=["session API writes", "admin forms"],
)
def test_csrf_is_enforced_on_logged_in_writes(request, user, url, content_type):
    client = Client(enforce_csrf_checks=True)
    client.force_login(request.getfixturevalue(user))
    body = {"name": "m", "name_or_path": "x", "prompt_format": "plain"}
    response = client.post(url, body, **({"content_type": content_type} if content_type else {}))
    assert response.status_code == 403
    if content_type:
        assert "CSRF" in response.json()["detail"]


def test_csrf_is_enforced_on_the_login_form(annotator):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/accounts/login/", {"username": "annotator", "password": "annotator-pass"}
    )
    assert response.status_code == 403


def test_failed_logins_are_throttled_per_username(client, annotator, other_annotator, settings):
    from django.core.cache import cache

    cache.clear()
    settings.LOGIN_FAILURE_LIMIT = 3
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "annotator", "password": "bad"})
        assert response.status_code == 200
    # Even the right password is refused while the pause lasts.
    response = client.post(
        "/accounts/login/", {"username": "annotator", "password": "annotator-pass"}
    )
    assert response.status_code == 429
    assert auth.TOO_MANY_ATTEMPTS.split(";")[0] in response.content.decode()
    # Another user is not affected.
    response = client.post(
        "/accounts/login/", {"username": "other_annotator", "password": "other_annotator-pass"}
    )
    assert response.status_code == 302
    # The admin login counts the same failures.
    response = Client().post("/admin/login/", {"username": "annotator", "password": "x"})
    assert response.status_code == 429
    cache.clear()


def test_html_in_questions_and_answers_is_escaped_in_the_admin(client, admin_user, hostile_data):
    prompt_set, model, run = hostile_data
    client.force_login(admin_user)
    pages = [
        f"/admin/generation/promptset/{prompt_set.pk}/change/",
        "/admin/generation/question/",
        "/admin/generation/answer/",
        f"/admin/generation/answer/{run.answers.first().pk}/change/",
    ]
    for url in pages:
        body = client.get(url).content.decode()
        assert SCRIPT not in body, url
        assert "&lt;script&gt;" in body, url


def test_trust_remote_code_is_off_by_default_and_superuser_only(client, staff_user, admin_user):
    model = language_model_register(name="m", name_or_path="x")
    assert model.trust_remote_code is False
    with pytest.raises(ServiceError, match="superuser"):
        language_model_register(
            name="m2", name_or_path="x", trust_remote_code=True, user=staff_user
        )
    client.force_login(staff_user)
    staff_user.user_permissions.add(*Permission.objects.all())
    page = client.get(f"/admin/generation/languagemodel/{model.pk}/change/").content.decode()
    assert 'name="trust_remote_code"' not in page
    client.force_login(admin_user)
    page = client.get(f"/admin/generation/languagemodel/{model.pk}/change/").content.decode()
    assert 'name="trust_remote_code"' in page


def test_pages_carry_a_strict_content_security_policy(client):
    response = client.get("/accounts/login/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


def test_check_deploy_is_clean_under_production_settings():
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "a-long-random-production-key-" + "x7Qp2LmZ9vRt" * 4,
        "ALLOWED_HOSTS": "eval.example.org",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": ""}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def _served_with_the_database_lost(request):
    from django.db import OperationalError

    from evalsite.views import server_error

    try:
        raise OperationalError("connection refused")
    except OperationalError:
        return server_error(request)


def test_a_lost_database_gives_a_clean_503_not_a_traceback(rf):
    from evalsite.views import DATABASE_DOWN

    response = _served_with_the_database_lost(rf.get("/api/studies/1/next/"))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert DATABASE_DOWN in response.content.decode()
    page = _served_with_the_database_lost(rf.get("/annotate/"))
    assert page.status_code == 503
    assert "Traceback" not in page.content.decode()


def test_every_upload_has_a_size_limit_and_refuses_bad_encoding(tmp_path, settings):
    from django.core.management import CommandError, call_command

    from generation.models import InstructionDataset, PromptSet

    settings.MAX_UPLOAD_BYTES = 200
    settings.MAX_VOTE_IMPORT_BYTES = 200
    big = "あ" * 100
    cases = [
        ("import_prompts", "p.csv", f"question\n{big}\n", ["--name", "p"]),
        (
            "import_instructions",
            "i.jsonl",
            json.dumps({"instruction": big, "output": "x"}, ensure_ascii=False) + "\n",
            ["--name", "i"],
        ),
        (
            "import_votes",
            "v.jsonl",
            json.dumps({"model_a": big, "model_b": "b", "winner": "tie"}, ensure_ascii=False),
            ["--study", "v"],
        ),
    ]
    for command, name, text, args in cases:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CommandError, match="over the 200-byte limit"):
            call_command(command, str(path), *args)
        path.write_bytes("質問\n".encode("shift_jis") + b"\xff\xfe")
        with pytest.raises(CommandError, match="UTF-8"):
            call_command(command, str(path), *args)
    assert not PromptSet.objects.exists()
    assert not InstructionDataset.objects.exists()


def test_model_names_with_html_are_escaped_on_the_results_page(client, admin_user):
    from annotation.studies import study_create

    prompt_set = prompt_set_create(name="set", questions=[ParsedQuestion(line=1, text="q")])
    question = prompt_set.questions.get()
    runs = []
    for name in (f"model {SCRIPT}", "plain model"):
        model = language_model_register(name=name, name_or_path="x")
        runs.append(
            generation_run_create_imported(
                model=model, prompt_set=prompt_set, answers={question.pk: "answer"}
            )
        )
    study = study_create(name=f"study {SCRIPT}", runs=runs)
    client.force_login(admin_user)
    body = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert SCRIPT not in body
    assert "&lt;script&gt;" in body
    admin_page = client.get("/admin/annotation/study/").content.decode()
    assert SCRIPT not in admin_page
