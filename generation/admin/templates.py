"""Prompt templates: created and edited here; a version a run used is kept, and saving changes
to it makes the next version (generation/templates.py)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html

from evalsite.errors import ServiceError

from ..engine import render
from ..models import PromptTemplate
from ..templates import (
    TEMPLATE_FIELDS,
    as_template,
    template_create,
    template_delete,
    template_delete_problem,
    template_fields_check,
    template_update,
)
from .forms import SafeJSONField

TEXT_FIELDS = [
    "system_prompt",
    "system_template",
    "user_template",
    "assistant_template",
    "turn_separator",
    "newline_token",
    "jinja_source",
]
PREVIEW_TURNS = (["富士山の高さは？", "では、二番目に高い山は？"], ["3776メートルです。"])
WITH_A_MODEL = (
    "A model's page (Prompt template check) shows exactly what generation sends it, special "
    "tokens included."
)
WITHOUT_A_TOKENIZER = (
    "Rendered without a tokenizer: bos_token and eos_token are empty here. " + WITH_A_MODEL
)
NEW_VERSION = (
    "{old} was used by a run and is kept as it was; your changes were saved as {new}. Models "
    "that name {name!r} use {new} from now on."
)


class PromptTemplateForm(forms.ModelForm):
    """Checks a template the way the API does (templates.template_fields_check)."""

    class Meta:
        model = PromptTemplate
        fields = TEMPLATE_FIELDS
        field_classes = {"stop_strings": SafeJSONField}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in TEXT_FIELDS:
            if name in self.fields:
                # A template's spaces and newlines are part of the prompt: keep them as typed.
                self.fields[name].strip = False

    def clean(self):
        data = super().clean()
        for name in TEXT_FIELDS:
            if isinstance(data.get(name), str):
                # Browsers send a textarea's newlines as CRLF; prompts use "\n".
                data[name] = data[name].replace("\r\n", "\n")
        values = {f: data[f] for f in TEMPLATE_FIELDS if f in data}
        values.setdefault("name", self.instance.name)
        try:
            self.checked = template_fields_check(values)
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(PromptTemplate)
class PromptTemplateAdmin(admin.ModelAdmin):
    form = PromptTemplateForm
    list_display = ["name", "version", "kind", "description", "used_by_runs", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "description"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                generation_runs=Count("runs", distinct=True),
                finetune_runs_count=Count("finetune_runs", distinct=True),
            )
        )

    @admin.display(description="used by runs")
    def used_by_runs(self, obj: PromptTemplate) -> int:
        return obj.generation_runs + obj.finetune_runs_count

    @admin.display(description="preview (a two-turn conversation)")
    def preview(self, obj: PromptTemplate) -> str:
        if obj.kind == PromptTemplate.Kind.CHAT_TEMPLATE:
            return f"Rendered by each model's own tokenizer. {WITH_A_MODEL}"
        try:
            text = render.render_prompt(as_template(obj), render.conversation(*PREVIEW_TURNS))
        except ValueError as exc:
            return str(exc)
        return format_html("<pre>{}</pre><p>{}</p>", text, WITHOUT_A_TOKENIZER)

    def get_readonly_fields(self, request, obj=None):
        kept = ["version", "created_by", "created_at", "preview"]
        # Models name their template: a name never changes once it exists.
        return ["name", *kept] if obj is not None else kept

    def get_actions(self, request):
        # Deleting goes one row at a time, through the check that keeps used versions.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or template_delete_problem(obj) is None)

    def delete_model(self, request, obj):
        template_delete(template=obj)

    def save_model(self, request, obj, form, change):
        values = dict(form.checked)
        name = values.pop("name")
        if not change:
            saved = template_create(name=name, user=request.user, **values)
        else:
            stored = PromptTemplate.objects.get(pk=obj.pk)
            saved = template_update(template=stored, changes=values, user=request.user)
            if saved.pk != stored.pk:
                self.message_user(
                    request,
                    NEW_VERSION.format(old=stored, new=saved, name=saved.name),
                    messages.WARNING,
                )
        # The admin goes on with ``obj`` (its messages, log entry and redirect): make it the
        # row that now holds the changes.
        for field in PromptTemplate._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
