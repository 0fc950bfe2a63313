"""Prompt templates in the admin and the staff API: create, edit (a used version makes a new
one), checks with clear errors, and the staff permissions every staff endpoint applies."""

from __future__ import annotations

import pytest

from generation.models import PromptTemplate
from generation.registry import language_model_register
from generation.templates import template_create
from generation.training.finetune import finetune_run_create
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db

ADMIN = "/admin/generation/prompttemplate/"
API = "/api/prompt-templates/"

FORM = {
    "name": "house-style",
    "description": "社内の書式",
    "kind": "turns",
    "system_prompt": "",
    "system_template": "{system}",
    # Browsers send textarea newlines as CRLF; the spaces around them are part of the prompt.
    "user_template": "質問: {content}\r\n",
    "assistant_template": "回答: {content}",
    "turn_separator": "\r\n",
    "newline_token": "",
    "stop_strings": '["質問:"]',
    "end_with_eos": "on",
    "jinja_source": "",
}


def used(row: PromptTemplate, dataset) -> PromptTemplate:
    """``row``'s name made the prompt format of a model that a queued fine-tune run records."""
    model = language_model_register(name=f"m-{row.name}", name_or_path="x", prompt_format=row.name)
    run = finetune_run_create(
        base_model=model, datasets=[(dataset, None)], params={"max_steps": 1}, enqueue=False
    )
    assert run.template == row
    return row


# --- admin -------------------------------------------------------------------------------------


def test_an_admin_creates_a_template_keeping_its_spaces_and_newlines(admin_user):
    client = logged_in(admin_user)
    assert client.get(f"{ADMIN}add/").status_code == 200
    response = client.post(f"{ADMIN}add/", FORM)
    assert response.status_code == 302, response.content.decode()[:3000]
    row = PromptTemplate.objects.get(name="house-style")
    assert row.version == 1 and row.created_by == admin_user
    assert row.user_template == "質問: {content}\n"
    assert row.turn_separator == "\n"
    assert row.stop_strings == ["質問:"]
    page = client.get(f"{ADMIN}{row.pk}/change/").content.decode()
    # The change page previews a two-turn conversation as the template renders it.
    assert "質問: 富士山の高さは？\n回答: 3776メートルです。\n質問: では" in page


def test_the_admin_refuses_a_bad_template_naming_the_field(admin_user):
    client = logged_in(admin_user)
    response = client.post(f"{ADMIN}add/", {**FORM, "user_template": "質問: {question}"})
    assert response.status_code == 200
    assert "user_template: unknown placeholder(s) {question}" in response.content.decode()
    response = client.post(
        f"{ADMIN}add/",
        {**FORM, "kind": "jinja", "jinja_source": "{{ ''.__class__.__mro__ }}"},
    )
    assert "is unsafe" in response.content.decode()
    assert not PromptTemplate.objects.filter(name="house-style").exists()


def test_an_admin_edits_an_unused_template_in_place(admin_user):
    row = template_create(name="house-style", user_template="Q: {content}\n")
    client = logged_in(admin_user)
    form = {**FORM, "user_template": "問: {content}\r\n"}
    del form["name"]  # read-only once created
    response = client.post(f"{ADMIN}{row.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    row.refresh_from_db()
    assert (row.version, row.user_template) == (1, "問: {content}\n")
    assert PromptTemplate.objects.filter(name="house-style").count() == 1


def test_an_admin_edit_of_a_used_version_saves_a_new_version(admin_user, fixture_dataset):
    row = used(template_create(name="house-style", user_template="Q: {content}\n"), fixture_dataset)
    client = logged_in(admin_user)
    form = {**FORM, "user_template": "問: {content}\r\n"}
    del form["name"]
    response = client.post(f"{ADMIN}{row.pk}/change/", form, follow=True)
    assert response.status_code == 200
    newer = PromptTemplate.objects.get(name="house-style", version=2)
    assert newer.user_template == "問: {content}\n"
    row.refresh_from_db()
    assert row.user_template == "Q: {content}\n"  # the run's version is untouched
    assert "was used by a run and is kept as it was" in response.content.decode()
    assert "house-style v2" in response.content.decode()


def test_the_admin_offers_no_delete_for_a_used_version(admin_user, fixture_dataset):
    row = used(template_create(name="house-style"), fixture_dataset)
    client = logged_in(admin_user)
    assert client.get(f"{ADMIN}{row.pk}/delete/").status_code == 403
    assert PromptTemplate.objects.filter(pk=row.pk).exists()
    spare = template_create(name="spare")
    assert client.post(f"{ADMIN}{spare.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not PromptTemplate.objects.filter(pk=spare.pk).exists()


# --- staff API ---------------------------------------------------------------------------------

BODY = {
    "name": "house-style",
    "kind": "turns",
    "user_template": "質問: {content}\n",
    "assistant_template": "回答: {content}",
    "turn_separator": "\n",
    "stop_strings": ["質問:"],
}


def test_staff_create_and_list_templates_through_the_api(staff_user):
    client = logged_in(staff_user)
    response = client.post(API, BODY, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["version"], body["in_use"]) == ("house-style", 1, False)
    assert body["user_template"] == "質問: {content}\n" and body["turn_separator"] == "\n"
    listed = client.get(API, {"name": "line_sft"}).json()
    assert [(t["name"], t["version"]) for t in listed["results"]] == [("line_sft", 1)]


def test_an_api_edit_of_a_used_version_answers_with_the_new_version(staff_user, fixture_dataset):
    row = used(template_create(**BODY), fixture_dataset)
    client = logged_in(staff_user)
    assert client.get(f"{API}{row.pk}/").json()["in_use"] is True
    response = client.patch(
        f"{API}{row.pk}/", {"stop_strings": ["質問:", "Q:"]}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 2 and body["id"] != row.pk and body["in_use"] is False
    assert body["stop_strings"] == ["質問:", "Q:"]
    row.refresh_from_db()
    assert row.stop_strings == ["質問:"]
    # An unused version changes in place.
    again = client.patch(
        f"{API}{body['id']}/", {"description": "v2"}, content_type="application/json"
    )
    assert again.json()["id"] == body["id"] and again.json()["version"] == 2


@pytest.mark.parametrize(
    ("change", "field_or_detail"),
    [
        ({"stop_strings": ["質問:", ""]}, "stop_strings"),
        ({"user_template": "{question}"}, "detail"),
        ({"kind": "jinja", "jinja_source": "{{ cycler.__init__.__globals__ }}"}, "detail"),
    ],
)
def test_the_api_refuses_a_bad_template_with_a_400(staff_user, change, field_or_detail):
    response = logged_in(staff_user).post(API, {**BODY, **change}, content_type="application/json")
    assert response.status_code == 400
    assert field_or_detail in response.json()
    assert not PromptTemplate.objects.filter(name="house-style").exists()


def test_the_api_refuses_a_rename_and_a_delete_of_a_used_version(staff_user, fixture_dataset):
    row = used(template_create(**BODY), fixture_dataset)
    client = logged_in(staff_user)
    renamed = client.patch(f"{API}{row.pk}/", {"name": "x"}, content_type="application/json")
    assert renamed.status_code == 400 and "keeps its name" in renamed.json()["detail"]
    deleted = client.delete(f"{API}{row.pk}/")
    assert deleted.status_code == 400 and "was used by a run" in deleted.json()["detail"]
    assert PromptTemplate.objects.filter(pk=row.pk).exists()


def test_templates_are_staff_only_within_model_permissions(client, annotator, bare_staff):
    assert client.get(API).status_code in (401, 403)
    assert logged_in(annotator).get(API).status_code == 403
    bare = logged_in(bare_staff)
    assert bare.get(API).status_code == 403
    assert bare.post(API, BODY, content_type="application/json").status_code == 403
    assert not PromptTemplate.objects.filter(name="house-style").exists()


def test_staff_preview_what_a_version_renders(staff_user):
    llm_jp = PromptTemplate.objects.get(name="llm_jp", version=1)
    client = logged_in(staff_user)
    response = client.post(
        f"{API}{llm_jp.pk}/preview/",
        {"turns": ["富士山の高さは？", "二番目は？"], "replies": ["3776メートルです。"]},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["prompt"] == (
        "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
        "\n\n### 指示:\n富士山の高さは？\n\n### 応答:\n3776メートルです。"
        "\n\n### 指示:\n二番目は？\n\n### 応答:\n"
    )
    assert body["messages"][0]["role"] == "system" and len(body["messages"]) == 4
    assert body["stop_strings"] == ["### 指示:"]


def test_a_preview_needs_a_last_user_turn_and_a_chat_template_needs_a_model(staff_user):
    client = logged_in(staff_user)
    line = PromptTemplate.objects.get(name="line_sft", version=1)
    answered = client.post(
        f"{API}{line.pk}/preview/",
        {"turns": ["a"], "replies": ["x"]},
        content_type="application/json",
    )
    assert answered.status_code == 400
    assert "must end with a user turn" in answered.json()["detail"]
    chat = PromptTemplate.objects.get(name="chat_template", version=1)
    response = client.post(
        f"{API}{chat.pk}/preview/", {"turns": ["a"]}, content_type="application/json"
    )
    assert response.status_code == 400 and "chat template" in response.json()["detail"]


def test_a_preview_needs_view_permission(bare_staff):
    line = PromptTemplate.objects.get(name="line_sft", version=1)
    response = logged_in(bare_staff).post(
        f"{API}{line.pk}/preview/", {"turns": ["a"]}, content_type="application/json"
    )
    assert response.status_code == 403


def test_a_fine_tune_run_shows_the_template_version_it_renders_with(
    admin_user, staff_user, fixture_dataset
):
    row = used(template_create(**BODY), fixture_dataset)
    run = row.finetune_runs.get()
    body = logged_in(staff_user).get(f"/api/finetune-runs/{run.pk}/").json()
    assert body["template"] == row.pk
    page = logged_in(admin_user).get(f"/admin/generation/finetunerun/{run.pk}/change/")
    assert "house-style v1" in page.content.decode()
