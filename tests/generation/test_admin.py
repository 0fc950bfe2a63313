"""The generation admin: import a prompt set, start runs from a model, cancel and retry runs."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile

from generation.models import GenerationRun, PromptSet
from generation.registry import language_model_register
from generation.runs import generation_run_create

pytestmark = pytest.mark.django_db


def test_an_admin_imports_a_prompt_set_from_the_upload_page(client, admin_user):
    client.force_login(admin_user)
    assert client.get("/admin/generation/promptset/import/").status_code == 200
    upload = SimpleUploadedFile("set.csv", "question,category\n質問,advice\n".encode())
    response = client.post(
        "/admin/generation/promptset/import/", {"name": "uploaded", "file": upload}
    )
    assert response.status_code == 302
    assert PromptSet.objects.get(name="uploaded").questions.count() == 1

    bad = SimpleUploadedFile("bad.csv", b"text\nx\n")
    page = client.post("/admin/generation/promptset/import/", {"name": "bad", "file": bad})
    assert page.status_code == 200
    assert "bad.csv, line 1: has no &#x27;question&#x27; column" in page.content.decode()
    assert not PromptSet.objects.filter(name="bad").exists()


def test_the_generate_action_asks_for_a_set_and_queues_one_run_per_model(
    client, admin_user, prompt_set, django_capture_on_commit_callbacks
):
    models = [language_model_register(name=f"m{i}", name_or_path=f"x/{i}") for i in range(2)]
    client.force_login(admin_user)
    selected = {"action": "generate_answers", ACTION_CHECKBOX_NAME: [m.pk for m in models]}
    form = client.post("/admin/generation/languagemodel/", selected)
    assert form.status_code == 200
    assert "Generate answers" in form.content.decode()
    with django_capture_on_commit_callbacks() as queued:
        done = client.post(
            "/admin/generation/languagemodel/",
            {
                **selected,
                "apply": "1",
                "prompt_set": prompt_set.pk,
                "seed": 7,
                "batch_size": 4,
                "params": '{"max_new_tokens": 32}',
            },
        )
    assert done.status_code == 302
    runs = GenerationRun.objects.order_by("model__name")
    assert [(r.model.name, r.status, r.total, r.seed) for r in runs] == [
        ("m0", "queued", 100, 7),
        ("m1", "queued", 100, 7),
    ]
    assert runs[0].params == {"max_new_tokens": 32}
    assert len(queued) == 2


def test_cancel_and_retry_actions_on_runs(client, admin_user, prompt_set):
    model = language_model_register(name="m", name_or_path="x")
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    client.force_login(admin_user)
    url = "/admin/generation/generationrun/"
    client.post(url, {"action": "cancel_runs", ACTION_CHECKBOX_NAME: [run.pk]})
    run.refresh_from_db()
    assert run.status == "cancelled"
    response = client.post(
        url, {"action": "cancel_runs", ACTION_CHECKBOX_NAME: [run.pk]}, follow=True
    )
    assert "only queued or running runs can be cancelled" in response.content.decode()
    client.post(url, {"action": "retry_runs", ACTION_CHECKBOX_NAME: [run.pk]})
    run.refresh_from_db()
    assert run.status == "queued"
