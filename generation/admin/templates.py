"""Prompt templates: created and edited here; a version a run used is kept, and saving changes
to it makes the next version (generation/templates.py)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count
from django.utils.html import format_html

from evalsite.admin_helpers import VerbatimTextForm, VersionedRowAdmin
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


class PromptTemplateForm(VerbatimTextForm):
    """Checks a template the way the API does (templates.template_fields_check)."""

    text_fields = TEXT_FIELDS

    class Meta:
        model = PromptTemplate
        fields = TEMPLATE_FIELDS
        field_classes = {"stop_strings": SafeJSONField}

    def clean(self):
        data = super().clean()
        values = {f: data[f] for f in TEMPLATE_FIELDS if f in data}
        values.setdefault("name", self.instance.name)
        try:
            self.checked = template_fields_check(values)
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(PromptTemplate)
class PromptTemplateAdmin(VersionedRowAdmin, admin.ModelAdmin):
    form = PromptTemplateForm
    list_display = ["name", "version", "kind", "description", "used_by_runs", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "description"]
    new_version = NEW_VERSION

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

    def delete_problem(self, obj):
        return template_delete_problem(obj)

    def delete_row(self, obj):
        template_delete(template=obj)

    def create_row(self, request, values):
        return template_create(user=request.user, **values)

    def update_row(self, request, stored, values):
        changes = {k: v for k, v in values.items() if k != "name"}
        return template_update(template=stored, changes=changes, user=request.user)

    def save_model(self, request, obj, form, change):
        self.save_versioned(request, obj, dict(form.checked), change)
