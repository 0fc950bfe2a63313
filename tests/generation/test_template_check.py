"""A model's own chat template: detected (chat_template.jinja, or chat_template in
tokenizer_config.json), compared with the chosen preset on a sample conversation (a unified
diff), offered as a versioned template rendered in the sandbox; the preview with a model shows
exactly what generation sends (special tokens included); presets' BOS/EOS strings are checked
against the tokenizer. The folders are copies of the project's tiny model."""

from __future__ import annotations

import json
import shutil

import pytest

from evalsite.errors import ServiceError
from generation.engine import render, template_check
from generation.engine.loading import load_tokenizer
from generation.engine.presets import PRESETS
from generation.engine.tiny import CHAT_TEMPLATE
from generation.models import LanguageModel, PromptTemplate
from generation.registry import language_model_register, storage_relative
from generation.templates import model_template_check, template_from_model
from tests.conftest import logged_in

# A model card's kind of chat template: BOS first, role markers, EOS after every message.
MARKED = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def preset(name: str) -> render.Template:
    return render.template_from(name, 1, PRESETS[name])


@pytest.fixture
def model_folder(tiny_model_dir, model_storage, request):
    """A copy of the tiny model's folder to change its chat template in."""
    folder = model_storage / f"own-{request.node.name[:40]}"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _register(folder, name="own", prompt_format="llm_jp") -> LanguageModel:
    return language_model_register(
        name=name, name_or_path=storage_relative(folder), prompt_format=prompt_format
    )


# --- the engine ----------------------------------------------------------------------------------


def test_the_tiny_models_own_template_is_found_and_matches_line_sft_without_a_system_prompt(
    tiny_model_dir,
):
    tokenizer = load_tokenizer(tiny_model_dir)
    own = template_check.own_chat_template(tokenizer)
    assert own == CHAT_TEMPLATE
    no_system = template_check.sample_messages("")
    assert template_check.template_diff(preset("line_sft"), own, tokenizer, no_system) == ""
    # With a system prompt they differ: its own writes a newline after it, line_sft does not.
    diff = template_check.template_diff(preset("line_sft"), own, tokenizer)
    lines = diff.splitlines()
    assert lines[:2] == ["--- line_sft v1", "+++ the model's own chat template"]
    assert f"-{template_check.SAMPLE_SYSTEM}ユーザー: 富士山の高さは？" in lines
    assert f"+{template_check.SAMPLE_SYSTEM}" in lines and "+ユーザー: 富士山の高さは？" in lines


def test_the_own_template_renders_in_the_sandbox_as_transformers_renders_it(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    messages = template_check.sample_messages()
    for source in (CHAT_TEMPLATE, MARKED):
        tokenizer.chat_template = source
        theirs = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        mine = render.render_prompt(template_check.own_template(source), messages, tokenizer)
        assert mine == theirs


def test_the_preview_is_exactly_what_generation_sends_bos_included(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    elyza = preset("elyza_llama2")  # writes {{ bos_token }} itself
    messages = render.conversation(["富士山の高さは？"], [])
    shown = template_check.preview(elyza, messages, tokenizer)
    assert shown.token_ids == render.encode_prompt(elyza, messages, tokenizer)
    assert shown.token_ids[0] == tokenizer.bos_token_id and shown.special_tokens == ["<s>"]
    assert shown.decoded == shown.prompt
    assert shown.prompt.startswith("<s>[INST] <<SYS>>\n")
    assert shown.tokenizer_would_add == []  # this tokenizer adds nothing by itself


def test_special_token_strings_are_checked_against_the_tokenizer(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    own = template_check.own_chat_template(tokenizer)
    # llm_jp on a tokenizer that adds no BOS and whose own template writes none: nothing to say.
    assert template_check.special_token_warnings(preset("llm_jp"), tokenizer, own) == []
    # A BOS the model's own template puts first, that llm_jp leaves out.
    warnings = template_check.special_token_warnings(preset("llm_jp"), tokenizer, MARKED)
    assert warnings == [template_check.BOS_MISSING.format(bos="<s>", template="llm_jp v1")]
    # An EOS string of another tokenizer family: plain text here.
    other = render.template_from(
        "other_eos",
        1,
        {**PRESETS["llm_jp"], "assistant_template": "\n\n### 応答:\n{content}<|eot_id|>"},
    )
    (warning,) = template_check.special_token_warnings(other, tokenizer, own)
    assert warning.startswith("other_eos v1 writes '<|eot_id|>', which is not a special token")
    assert "its special tokens: " in warning and "</s>" in warning
    # The tokenizer's own EOS string is fine.
    same = render.template_from(
        "own_eos", 1, {**PRESETS["llm_jp"], "assistant_template": "\n\n### 応答:\n{content}</s>"}
    )
    assert template_check.special_token_warnings(same, tokenizer, own) == []


# --- the Django side -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_model_folder_with_its_own_template_is_checked_and_offered_as_a_template(
    model_folder, staff_user
):
    (model_folder / "chat_template.jinja").write_text(MARKED, encoding="utf-8")
    model = _register(model_folder)
    check = model_template_check(model=model)
    assert (check["template"], check["version"]) == ("llm_jp", 1)
    assert check["own_chat_template"] == MARKED
    assert check["own_chat_template_file"] == "chat_template.jinja"
    assert (
        "+<s><|system|>" in check["diff"] and "-以下は、タスクを説明する指示です。" in check["diff"]
    )
    assert check["warnings"] == [template_check.BOS_MISSING.format(bos="<s>", template="llm_jp v1")]
    assert check["preview"]["prompt"].startswith("以下は") and check["preview_error"] == ""

    row = template_from_model(model=model, name="own-marked", use=True, user=staff_user)
    assert (row.name, row.version, row.kind, row.jinja_source) == (
        "own-marked", 1, PromptTemplate.Kind.JINJA, MARKED
    )  # fmt: skip
    assert (
        row.description == "own's own chat template (chat_template.jinja), rendered in the sandbox"
    )
    model.refresh_from_db()
    assert model.prompt_format == "own-marked"
    after = model_template_check(model=model)
    assert after["diff"] == ""
    # Its role marker is plain text to this tokenizer (a real model's would be a special token).
    (warning,) = after["warnings"]
    assert warning.startswith("own-marked v1 writes '<|assistant|>', which is not a special")
    # What generation now sends: the BOS first, as the model's card writes it.
    assert after["preview"]["token_ids"][0] == load_tokenizer(model_folder).bos_token_id
    with pytest.raises(ServiceError, match="a prompt template named 'own-marked' already exists"):
        template_from_model(model=model, name="own-marked")


@pytest.mark.django_db
def test_a_template_in_tokenizer_config_is_found_and_none_is_said_plainly(model_folder):
    (model_folder / "chat_template.jinja").unlink()
    config_path = model_folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = MARKED
    config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    model = _register(model_folder)
    check = model_template_check(model=model)
    assert check["own_chat_template"] == MARKED
    assert check["own_chat_template_file"] == "tokenizer_config.json"

    del config["chat_template"]
    config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    bare = _register(model_folder, name="bare")
    check = model_template_check(model=bare)
    assert (check["own_chat_template"], check["diff"]) == ("", "")
    with pytest.raises(ServiceError, match="model 'bare' has no chat template of its own"):
        template_from_model(model=bare, name="nothing")
    assert not PromptTemplate.objects.filter(name="nothing").exists()


@pytest.mark.django_db
@pytest.mark.postgres
def test_the_api_checks_a_model_adopts_its_template_and_previews_with_its_tokenizer(
    model_folder, admin_user, bare_staff
):
    (model_folder / "chat_template.jinja").write_text(MARKED, encoding="utf-8")
    model = _register(model_folder)
    client = logged_in(admin_user)
    check = client.get(f"/api/models/{model.pk}/template/")
    assert check.status_code == 200, check.content
    body = check.json()
    assert body["own_chat_template_file"] == "chat_template.jinja" and body["warnings"]
    assert body["preview"]["decoded"] == body["preview"]["prompt"]

    elyza = PromptTemplate.objects.get(name="elyza_llama2")
    previewed = client.post(
        f"/api/prompt-templates/{elyza.pk}/preview/",
        {"turns": ["富士山の高さは？"], "model": model.pk},
        content_type="application/json",
    )
    assert previewed.status_code == 200, previewed.content
    tokens = previewed.json()["tokens"]
    assert previewed.json()["prompt"].startswith("<s>[INST]") and tokens["special_tokens"] == [
        "<s>"
    ]
    # Without a model the tokenizer's tokens are unknown: BOS renders empty, and no tokens.
    bare = client.post(
        f"/api/prompt-templates/{elyza.pk}/preview/",
        {"turns": ["富士山の高さは？"]},
        content_type="application/json",
    )
    assert bare.json()["prompt"].startswith("[INST]") and "tokens" not in bare.json()

    adopted = client.post(
        f"/api/models/{model.pk}/template/adopt/",
        {"name": "own-api", "use": True},
        content_type="application/json",
    )
    assert adopted.status_code == 201, adopted.content
    assert (adopted.json()["kind"], adopted.json()["version"]) == ("jinja", 1)
    model.refresh_from_db()
    assert model.prompt_format == "own-api"
    # Staff who may read models and templates but not add templates may not adopt one.
    from django.contrib.auth.models import Permission

    bare_staff.user_permissions.set(
        Permission.objects.filter(codename__in=["view_languagemodel", "view_prompttemplate"])
    )
    reader = logged_in(bare_staff)
    assert reader.get(f"/api/models/{model.pk}/template/").status_code == 200
    refused = reader.post(
        f"/api/models/{model.pk}/template/adopt/",
        {"name": "own-other"},
        content_type="application/json",
    )
    assert refused.status_code == 403
    assert not PromptTemplate.objects.filter(name="own-other").exists()


@pytest.mark.django_db
def test_the_admin_shows_the_check_and_creates_the_template(model_folder, admin_user):
    from django.contrib.admin import helpers

    (model_folder / "chat_template.jinja").write_text(MARKED, encoding="utf-8")
    model = _register(model_folder)
    client = logged_in(admin_user)
    page = client.get(f"/admin/generation/languagemodel/{model.pk}/change/").content.decode()
    assert "Prompt template check" in page
    assert "starts with its BOS token &#x27;&lt;s&gt;&#x27;; llm_jp v1 writes none" in page
    assert "+&lt;s&gt;&lt;|system|&gt;" in page

    selected = {"action": "adopt_own_template", helpers.ACTION_CHECKBOX_NAME: [model.pk]}
    response = client.post(
        "/admin/generation/languagemodel/",
        {**selected, "name": "own-admin", "use": "on", "apply": "1"},
        follow=True,
    )
    assert "Created own-admin v1 from own&#x27;s own chat template" in response.content.decode()
    model.refresh_from_db()
    assert model.prompt_format == "own-admin"
