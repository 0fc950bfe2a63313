"""Generation runs (made by the "generate answers" action, the API or the command) and their
answers with their provenance: both read-only here; runs can be cancelled and retried (the
spine's RunAdmin), or regenerated."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evalsite.admin_helpers import ExtensibleAdmin, ImportFromFile, apply_each
from evalsite.errors import ServiceError
from evalsite.runs.admin import RunAdmin

from ..answers_import import answers_import
from ..models import Answer, GenerationRun, PromptSet
from ..regenerate import answers_regenerate, generation_run_regenerate, regeneration_report


class AnswersImportForm(forms.Form):
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    file = forms.FileField(help_text="FastChat model_answer JSONL")
    # ImportFromFile hands ``name`` and ``description`` to import_file: the model, and nothing.
    name = forms.CharField(
        label="Model",
        max_length=200,
        required=False,
        help_text="Blank: each line's model_id (a new name registers an imported model)",
    )
    description = forms.CharField(required=False, widget=forms.HiddenInput)


def _template_version(template) -> str:
    return f"{template.name} v{template.version}" if template is not None else "-"


def _pre(text: str) -> SafeString:
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _pretty_json(value) -> SafeString:
    return _pre(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True))


@admin.register(GenerationRun)
class GenerationRunAdmin(ExtensibleAdmin, ImportFromFile, RunAdmin):
    """Runs are made by the "generate answers" action, the API or the command (or imported)."""

    list_display = ["id", "model", "prompt_set", "status", "progress", "imported", "created_at"]
    list_filter = ["status", "imported", "model", "prompt_set"]
    run_fields = [
        "model",
        "prompt_set",
        "params",
        "seed",
        "batch_size",
        "engine_requested",
        "template_version",
        "imported",
    ]
    result_fields = [
        "engine",
        "answers_link",
        "stop_reasons",
        "regenerated_from",
        "regeneration",
        "requests",
        "usage",
    ]
    actions = ["retry_runs", "cancel_runs", "regenerate_runs"]
    retry_description = "Retry (generate missing answers)"
    change_list_template = "admin/generation/generationrun/change_list.html"
    import_form = AnswersImportForm
    import_title = "Import answers generated elsewhere"
    import_template = "admin/generation/generationrun/import_form.html"

    def import_file(self, request, upload, data):
        runs = answers_import(
            data=upload["data"],
            filename=upload["filename"],
            prompt_set=data["prompt_set"],
            model_name=upload["name"],
            user=request.user,
        )
        made = ", ".join(f"run {r.pk} ({r.model.name}: {r.total} answers)" for r in runs)
        return runs[0], f"Imported {made}."

    def has_regenerate_permission(self, request) -> bool:
        """Regenerating queues a new run: the rights to add one and to run models."""
        return request.user.has_perms(
            ["generation.add_generationrun", "generation.run_languagemodel"]
        )

    @admin.display(description="template version")
    def template_version(self, obj: GenerationRun) -> str:
        return _template_version(obj.template)

    @admin.display(description="answers")
    def answers_link(self, obj: GenerationRun) -> SafeString:
        url = reverse("admin:generation_answer_changelist") + f"?run__id__exact={obj.pk}"
        return format_html('<a href="{}">{} answers, with their provenance</a>', url, obj.done)

    @admin.display(description="why answers stopped")
    def stop_reasons(self, obj: GenerationRun) -> str:
        counts = obj.answers.values("stop_reason").annotate(n=Count("pk")).order_by("stop_reason")
        labels = dict(Answer.StopReason.choices)
        parts = [f"{labels.get(c['stop_reason'], 'not recorded')}: {c['n']}" for c in counts]
        truncated = obj.answers.filter(truncated=True).count()
        return "; ".join([*parts, f"truncated: {truncated}"]) if parts else "-"

    @admin.display(description="identical to the original's")
    def regeneration(self, obj: GenerationRun) -> str:
        report = regeneration_report(run=obj)
        if report is None:
            return "-"
        text = (
            f"{report.identical} of {report.compared} answers identical to run "
            f"{report.original}'s ({report.different} different)"
        )
        if report.copied:
            text += f"; {report.copied} copied from it, not made again"
        return text + (f"; {report.missing} not generated yet" if report.missing else "")

    @admin.action(
        description="Regenerate into a new run (same model, parameters, seed and template)",
        permissions=["regenerate"],
    )
    def regenerate_runs(self, request, queryset):
        apply_each(
            self,
            request,
            queryset,
            lambda run: generation_run_regenerate(run=run, user=request.user),
            lambda run, new: (
                f"Queued run {new.pk} regenerating run {run.pk}; its page will say how many "
                "answers came out identical."
            ),
            level=messages.WARNING,
        )


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    """Staff only: an answer's provenance is never shown to annotators."""

    list_display = [
        "run",
        "question",
        "turn",
        "short_text",
        "new_tokens",
        "stop_reason",
        "truncated",
    ]
    list_filter = ["stop_reason", "truncated", "run__model", "run__prompt_set"]
    list_per_page = 50  # a run's answers, 50 a page (the run's page links here)
    list_select_related = ["run__model", "run__prompt_set", "question__prompt_set"]
    search_fields = ["text"]
    actions = ["regenerate_answers"]
    _answer_fields = ["run", "question", "turn", "text", "copied_from"]
    _provenance_fields = [
        "template_version",
        "prompt",
        "prompt_tokens",
        "new_tokens",
        "model_revision",
        "decoding_parameters",
        "stop_reason",
        "truncated",
        "created_at",
    ]
    fieldsets = [
        (None, {"fields": _answer_fields}),
        ("Provenance", {"fields": _provenance_fields}),
    ]
    # Answers are made by runs (or imported); the page shows how, and changes nothing.
    readonly_fields = _answer_fields + _provenance_fields

    @admin.display(description="answer")
    def short_text(self, obj: Answer) -> str:
        return obj.text[:80]

    @admin.display(description="template version")
    def template_version(self, obj: Answer) -> str:
        return _template_version(obj.run.template)

    @admin.display(description="prompt (or the request's messages)")
    def prompt(self, obj: Answer) -> SafeString:
        if not obj.prompt_text:
            return "-"
        try:
            messages_ = json.loads(obj.prompt_text)
        except ValueError:
            return _pre(obj.prompt_text)
        if isinstance(messages_, list) and all(isinstance(m, dict) for m in messages_):
            return format_html_join(
                "",
                "<p><b>{}</b></p>{}",
                ((m.get("role", "?"), _pre(str(m.get("content", "")))) for m in messages_),
            )
        return _pretty_json(messages_)

    @admin.display(description="decoding (parameters and seed)")
    def decoding_parameters(self, obj: Answer) -> SafeString:
        return _pretty_json(obj.decoding) if obj.decoding else "-"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_regenerate_permission(self, request) -> bool:
        return request.user.has_perms(
            ["generation.add_generationrun", "generation.run_languagemodel"]
        )

    @admin.action(
        description="Regenerate these answers into a new run (the others copied)",
        permissions=["regenerate"],
    )
    def regenerate_answers(self, request, queryset):
        try:
            runs = answers_regenerate(answers=queryset, user=request.user)
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        for run in runs:
            self.message_user(
                request,
                f"Queued run {run.pk} regenerating {run.total - run.done} answer(s) of run "
                f"{run.regenerated_from_id}; its page will say whether they came out the same.",
            )
