"""Prompt templates as versioned rows: the presets, lookup, checks, the Jinja sandbox, and the
rule that a version a run recorded is never changed in place."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from evalsite.errors import ServiceError
from generation.engine import render
from generation.engine.presets import PRESETS
from generation.models import LanguageModel, PromptTemplate
from generation.registry import language_model_register, language_model_update
from generation.templates import (
    as_template,
    template_create,
    template_delete,
    template_for,
    template_update,
)
from generation.training.finetune import finetune_run_create

pytestmark = pytest.mark.django_db

TURNS_OK = {
    "kind": "turns",
    "user_template": "質問: {content}\n",
    "assistant_template": "回答: {content}",
    "turn_separator": "\n",
    "stop_strings": ["質問:"],
}


def used_by_a_run(model: LanguageModel, dataset) -> PromptTemplate:
    """Queue a fine-tune run of ``model``: it records the version its examples render with."""
    run = finetune_run_create(
        base_model=model, datasets=[(dataset, None)], params={"max_steps": 1}, enqueue=False
    )
    return run.template


# --- presets and lookup ------------------------------------------------------------------------


def test_the_presets_are_shipped_as_version_one_and_render_like_the_engines_data():
    rows = {t.name: t for t in PromptTemplate.objects.filter(version=1)}
    assert set(PRESETS) <= set(rows)
    for name, data in PRESETS.items():
        assert as_template(rows[name]) == render.template_from(name, 1, data), name


def test_a_model_uses_the_latest_version_of_the_template_it_names(fixture_dataset):
    model = language_model_register(name="m", name_or_path="x", prompt_format="calm2")
    first = template_for(model)
    assert (first.name, first.version) == ("calm2", 1)
    used_by_a_run(model, fixture_dataset)
    second = template_update(template=first, changes={"stop_strings": ["USER:", "ユーザー:"]})
    assert second.version == 2
    assert template_for(model) == second


def test_a_model_naming_a_missing_template_gets_a_clear_error():
    model = language_model_register(name="m", name_or_path="x")
    LanguageModel.objects.filter(pk=model.pk).update(prompt_format="gone")
    model.refresh_from_db()
    with pytest.raises(ServiceError) as error:
        template_for(model)
    message = str(error.value)
    assert "model 'm' names prompt template 'gone', which does not exist" in message
    assert "line_sft" in message and "elyza_llama2" in message


def test_a_model_may_name_any_template_and_no_unknown_one():
    template_create(name="house-style", **TURNS_OK)
    model = language_model_register(name="m", name_or_path="x", prompt_format="house-style")
    assert model.prompt_format == "house-style"
    with pytest.raises(ServiceError) as error:
        language_model_update(model=model, changes={"prompt_format": "alpaca"})
    assert str(error.value).startswith("unknown prompt template 'alpaca'; known templates: ")
    assert "house-style" in str(error.value) and "alpaca_ja" in str(error.value)


def test_register_model_accepts_any_template_name():
    template_create(name="house-style", **TURNS_OK)
    call_command("register_model", "m", "--path", "x", "--prompt-format", "house-style")
    assert LanguageModel.objects.get(name="m").prompt_format == "house-style"


def test_register_model_refuses_an_unknown_template_listing_the_names():
    with pytest.raises(CommandError) as error:
        call_command("register_model", "m", "--path", "x", "--prompt-format", "alpaca")
    message = str(error.value)
    assert message.startswith("unknown prompt template 'alpaca'; known templates: ")
    for name in PRESETS:
        assert name in message
    assert not LanguageModel.objects.filter(name="m").exists()


# --- versions ----------------------------------------------------------------------------------


def test_editing_a_version_a_run_used_makes_a_new_version_and_the_run_keeps_the_old(
    fixture_dataset,
):
    template_create(name="house-style", **TURNS_OK)
    model = language_model_register(name="m", name_or_path="x", prompt_format="house-style")
    run_template = used_by_a_run(model, fixture_dataset)
    assert run_template.version == 1

    edited = template_update(
        template=run_template, changes={"assistant_template": "答え: {content}"}
    )
    assert edited.pk != run_template.pk and edited.version == 2
    kept = PromptTemplate.objects.get(pk=run_template.pk)
    assert kept.assistant_template == "回答: {content}"  # the run's version is as it was
    assert model.finetune_runs.get().template_id == run_template.pk
    assert edited.assistant_template == "答え: {content}"
    assert edited.user_template == kept.user_template  # the rest is carried over
    # Runs from now on render with the new version.
    assert template_for(model) == edited
    assert used_by_a_run(model, fixture_dataset) == edited


def test_a_version_no_run_used_is_changed_in_place():
    row = template_create(name="house-style", **TURNS_OK)
    edited = template_update(template=row, changes={"turn_separator": "\n\n"})
    assert edited.pk == row.pk and edited.version == 1
    assert PromptTemplate.objects.filter(name="house-style").count() == 1


def test_a_used_versions_description_changes_in_place(fixture_dataset):
    template_create(name="house-style", **TURNS_OK)
    model = language_model_register(name="m", name_or_path="x", prompt_format="house-style")
    row = used_by_a_run(model, fixture_dataset)
    edited = template_update(template=row, changes={"description": "社内の書式"})
    assert edited.pk == row.pk and edited.description == "社内の書式"


def test_editing_an_old_used_version_again_makes_the_next_number(fixture_dataset):
    model = language_model_register(name="m", name_or_path="x", prompt_format="calm2")
    v1 = used_by_a_run(model, fixture_dataset)
    v2 = template_update(template=v1, changes={"stop_strings": ["USER:", "\nUSER"]})
    v3 = template_update(template=v1, changes={"turn_separator": "\n\n"})
    assert (v2.version, v3.version) == (2, 3)
    assert v3.stop_strings == ["USER:"]  # made from v1, not from v2


def test_a_change_that_changes_nothing_saves_nothing(fixture_dataset):
    model = language_model_register(name="m", name_or_path="x", prompt_format="calm2")
    v1 = used_by_a_run(model, fixture_dataset)
    assert template_update(template=v1, changes={"user_template": v1.user_template}) == v1
    assert PromptTemplate.objects.filter(name="calm2").count() == 1


def test_a_template_keeps_its_name_and_a_name_is_created_once():
    row = template_create(name="house-style", **TURNS_OK)
    with pytest.raises(ServiceError, match="keeps its name"):
        template_update(template=row, changes={"name": "other"})
    with pytest.raises(ServiceError, match="'house-style' already exists; edit it instead"):
        template_create(name="house-style", **TURNS_OK)


def test_a_used_version_and_the_last_version_a_model_names_cannot_be_deleted(fixture_dataset):
    row = template_create(name="house-style", **TURNS_OK)
    model = language_model_register(name="m", name_or_path="x", prompt_format="house-style")
    with pytest.raises(ServiceError, match="only version of a template these models use: m"):
        template_delete(template=row)
    used = used_by_a_run(model, fixture_dataset)
    newer = template_update(template=used, changes={"turn_separator": ""})
    with pytest.raises(ServiceError, match="was used by a run"):
        template_delete(template=used)
    template_update(template=newer, changes={"turn_separator": "\n"})  # unused: in place
    spare = template_create(name="spare", **TURNS_OK)
    template_delete(template=spare)
    assert not PromptTemplate.objects.filter(name="spare").exists()


# --- checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"user_template": "質問: {question}\n"},
            "user_template: unknown placeholder(s) {question}; only {content} may be used",
        ),
        (
            {"assistant_template": "回答:"},
            "assistant_template: must contain {content} exactly once (found 0)",
        ),
        (
            {"turn_separator": "{content}"},
            "turn_separator: unknown placeholder(s) {content}; none may be used",
        ),
        (
            {"system_prompt": "丁寧に。", "system_template": "システム"},
            "system_template: must contain {system} to write the system prompt",
        ),
        ({"stop_strings": ["質問:", ""]}, "stop_strings: stop strings must be a list of"),
        ({"stop_strings": "質問:"}, "stop_strings: stop strings must be a list of"),
        ({"stop_strings": [3]}, "stop_strings: stop strings must be a list of"),
        ({"kind": "jinja"}, "jinja_source: a jinja template needs its source"),
        ({"kind": "jinja", "jinja_source": "{% for m in messages %}"}, "jinja_source: "),
        ({"jinja_source": "{{ messages }}"}, "only a template of kind jinja has Jinja source"),
        ({"kind": "mustache"}, "kind: unknown template kind 'mustache'"),
    ],
)
def test_a_bad_template_is_refused_naming_the_field_and_nothing_is_saved(fields, message):
    with pytest.raises(ServiceError) as error:
        template_create(name="bad", **{**TURNS_OK, **fields})
    assert message in str(error.value)
    assert not PromptTemplate.objects.filter(name="bad").exists()


def test_a_bad_edit_is_refused_and_the_row_is_unchanged():
    row = template_create(name="house-style", **TURNS_OK)
    with pytest.raises(ServiceError, match="must contain {content} exactly once"):
        template_update(template=row, changes={"user_template": "{content}{content}"})
    row.refresh_from_db()
    assert row.user_template == "質問: {content}\n"


# --- the Jinja sandbox -------------------------------------------------------------------------

UNSAFE = [
    # Walking from a string to Python's classes (the classic template escape).
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    # Reaching a function's globals (and from there os).
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages.__class__ }}",
    # Changing what the renderer handed over.
    "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}{{ messages }}",
    "{{ messages[0].update({'content': 'x'}) }}",
]


@pytest.mark.parametrize("source", UNSAFE)
def test_the_sandbox_refuses_unsafe_access_when_a_template_is_saved(source):
    with pytest.raises(ServiceError) as error:
        template_create(name="escape", kind="jinja", jinja_source=source)
    assert "jinja_source" in str(error.value)
    assert "unsafe" in str(error.value) or "undefined" in str(error.value)
    assert not PromptTemplate.objects.filter(name="escape").exists()


@pytest.mark.parametrize("source", UNSAFE)
def test_the_sandbox_refuses_unsafe_access_when_a_template_renders(source):
    template = render.Template(name="escape", version=1, kind="jinja", jinja_source=source)
    with pytest.raises(ValueError) as error:
        render.render_prompt(template, render.conversation(["こんにちは"], []))
    assert str(error.value).startswith("template escape v1: the Jinja source failed: ")


def test_a_misspelt_jinja_variable_is_an_error_not_empty_text():
    with pytest.raises(ServiceError, match="'mesages' is undefined"):
        template_create(
            name="typo",
            kind="jinja",
            jinja_source="{% for m in mesages %}{{ m.content }}{% endfor %}",
        )


def test_a_jinja_template_renders_its_variables():
    row = template_create(
        name="jinja-house",
        kind="jinja",
        system_prompt="丁寧に。",
        jinja_source=(
            "{{ bos_token }}{{ system_prompt }}|"
            "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
            "{% if add_generation_prompt %}assistant={% endif %}"
        ),
    )
    text = render.render_prompt(as_template(row), render.conversation(["a", "b"], ["x"]))
    assert text == "丁寧に。|system=丁寧に。;user=a;assistant=x;user=b;assistant="
