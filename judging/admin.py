"""Staff admin for the LLM judge: judge prompts (a version a run used is kept; saving changes to
it makes the next version), judge runs with every verdict (read-only; cancel and retry), and the
"Run LLM judge…" action on studies.

judging depends on annotation, never the reverse: the study action is added here by extending
whatever admin annotation registered for Study (as annotation extends the generation-run admin).
Judge names, prompts and raw outputs are staff matters; none of this reaches an annotator.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from jinja2 import TemplateError

import annotation.admin  # noqa: F401 - registers the Study admin extended below
from annotation.models import Study
from evalsite.admin_helpers import (
    ImportFromFile,
    VerbatimTextForm,
    VersionedRowAdmin,
    admin_action_register,
    apply_each,
    form_action,
)
from evalsite.errors import ServiceError
from evalsite.runs.admin import RunAdmin
from generation.admin.base import ReadOnlyAdmin
from generation.models import LanguageModel

from .models import JudgePrompt, JudgeRun, Judgment
from .prompts import (
    PROMPT_FIELDS,
    judge_prompt_create,
    judge_prompt_delete,
    judge_prompt_delete_problem,
    judge_prompt_for,
    judge_prompt_preview,
    judge_prompt_problems,
    judge_prompt_update,
    judge_prompts_import,
)
from .runs import judge_run_create
from .summary import judge_run_summary

FORM_FIELDS = [f for f in PROMPT_FIELDS if f != "source"]  # source: set by file loads only
TEXT_FIELDS = ("description", "system_prompt", "template")
NEW_VERSION = (
    "A judge run used {old}, so it is kept as it was; your changes were saved as {new}. "
    "Judge runs that ask for {name} use {new} from now on."
)


def _pre(text: str) -> SafeString:
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0; max-height: 30em; overflow: auto">{}</pre>',
        text,
    )


def _grade_row(model: dict) -> tuple:
    """A model's line of grades; "-" where nothing is graded yet."""
    shown = ["-" if model[k] is None else model[k] for k in ("mean", "low", "high")]
    return (model["model"], *shown, model["graded"], model["unparsable"])


# --- judge prompts -----------------------------------------------------------------------------


class JudgePromptForm(VerbatimTextForm):
    """Checks a prompt as the services do (prompts.judge_prompt_problems), each problem shown
    on its own field."""

    text_fields = TEXT_FIELDS

    class Meta:
        model = JudgePrompt
        fields = FORM_FIELDS

    def clean(self):
        data = super().clean()
        current = {f: getattr(self.instance, f) for f in FORM_FIELDS}
        self.checked = {**current, **{f: data[f] for f in FORM_FIELDS if f in data}}
        for field, problem in judge_prompt_problems(self.checked).items():
            self.add_error(field if field in self.fields else None, problem)
        return data


class PromptFileForm(forms.Form):
    file = forms.FileField(help_text="JSON, JSON Lines, YAML, or a text template with front matter")
    # ImportFromFile hands ``name`` and ``description`` to import_file: a name, and nothing.
    name = forms.CharField(
        max_length=100,
        required=False,
        help_text="Store a one-prompt file under this name (blank: the name in the file)",
    )
    description = forms.CharField(required=False, widget=forms.HiddenInput)


@admin.register(JudgePrompt)
class JudgePromptAdmin(VersionedRowAdmin, ImportFromFile, admin.ModelAdmin):
    form = JudgePromptForm
    change_list_template = "admin/judging/judgeprompt/change_list.html"
    import_form = PromptFileForm
    import_title = "Load judge prompts from a file"
    import_template = "admin/judging/judgeprompt/import_form.html"
    list_display = ["name", "version", "kind", "verdict_format", "description", "used_by_runs"]
    list_filter = ["kind", "verdict_format"]
    search_fields = ["name", "description"]
    new_version = NEW_VERSION

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(runs_n=Count("runs"))

    def import_file(self, request, upload, data):
        rows = judge_prompts_import(
            data=upload["data"],
            filename=upload["filename"],
            name=upload["name"] or None,
            user=request.user,
        )
        stored = ", ".join(str(row) for row in rows)
        return rows[0], f"Stored {stored} from {upload['filename']}."

    @admin.display(description="used by runs", ordering="runs_n")
    def used_by_runs(self, obj: JudgePrompt) -> int:
        return obj.runs_n

    @admin.display(description="preview (sample question and answers)")
    def preview(self, obj: JudgePrompt) -> SafeString:
        try:
            text = judge_prompt_preview(obj)
        except TemplateError as exc:  # a row stored before the checks it would now fail
            return _pre(f"the template failed: {exc}")
        if obj.system_prompt:
            text = f"[system]\n{obj.system_prompt}\n\n[user]\n{text}"
        return _pre(text)

    def get_readonly_fields(self, request, obj=None):
        kept = ["version", "source", "created_by", "created_at"]
        if obj is None:
            return kept
        # Runs and commands ask for a prompt by name, and a name keeps its kind.
        return ["name", "kind", *kept, "preview"]

    def delete_problem(self, obj):
        return judge_prompt_delete_problem(obj)

    def delete_row(self, obj):
        judge_prompt_delete(prompt=obj)

    def create_row(self, request, values):
        return judge_prompt_create(user=request.user, **values)

    def update_row(self, request, stored, values):
        return judge_prompt_update(prompt=stored, changes=values, user=request.user)

    def save_model(self, request, obj, form, change):
        self.save_versioned(request, obj, {f: form.checked[f] for f in FORM_FIELDS}, change)


# --- judge runs --------------------------------------------------------------------------------


@admin.register(Judgment)
class JudgmentAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every verdict of every run as the judge gave it, read-only: 50 a page, filtered by run,
    verdict and tries (a run's page links here; 600 verdicts inline made a page of 51,000
    pixels)."""

    list_display = ["id", "run", "item", "order", "verdict", "score", "attempts", "output"]
    list_filter = [("run", admin.RelatedOnlyFieldListFilter), "verdict", "attempts"]
    list_per_page = 50
    search_fields = ["raw_output"]
    fields = ["run", "item", "order", "verdict", "score", "attempts", "prompt", "output"]
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("run", "comparison__question", "answer__question", "answer__run__model")
        )

    @admin.display(description="judged")
    def item(self, obj: Judgment) -> str:
        if obj.comparison_id:
            return f"comparison {obj.comparison_id} (question {obj.comparison.question.position})"
        answer = obj.answer
        return f"{answer.run.model.name}, question {answer.question.position} turn {answer.turn}"

    @admin.display(description="order")
    def order(self, obj: Judgment) -> str:
        return f"answer {obj.first} shown first" if obj.first else "-"

    @admin.display(description="raw output")
    def output(self, obj: Judgment) -> SafeString:
        return _pre(obj.raw_output)


@admin.register(JudgeRun)
class JudgeRunAdmin(RunAdmin):
    list_display = [
        "id",
        "judge",
        "study",
        "prompt",
        "status",
        "progress",
        "counts",
        "created_at",
    ]
    list_filter = ["status", "judge", "study"]
    list_select_related = ["judge", "study", "prompt"]
    run_fields = [
        "judge",
        "study",
        "prompt",
        "template",
        "comparison_ids",
        "params",
        "seed",
        "batch_size",
        "max_attempts",
        "inconsistent",
        "engine_requested",
    ]
    result_fields = ["judgments_link", "engine", "counts", "grades", "requests", "usage"]
    retry_description = "Retry (ask the missing verdicts)"

    @admin.display(description="verdicts")
    def judgments_link(self, obj: JudgeRun) -> SafeString:
        url = reverse("admin:judging_judgment_changelist") + f"?run__id__exact={obj.pk}"
        return format_html('<a href="{}">{} verdicts, 50 a page</a>', url, obj.done)

    @admin.display(description="counts")
    def counts(self, obj: JudgeRun) -> str:
        summary = judge_run_summary(obj)
        if obj.grading:
            return f"graded {summary['graded']}, unparsable {summary['unparsable']}"
        return (
            f"judged {summary['judged']}/{summary['expected']}: consistent "
            f"{summary['consistent']}, inconsistent {summary['inconsistent']}, unparsable "
            f"{summary['unparsable']}; {summary['votes']} votes"
        )

    @admin.display(description="grades (mean, 95% bootstrap interval over questions)")
    def grades(self, obj: JudgeRun) -> SafeString | str:
        if not obj.grading:
            return "-"
        from .grading import grading_results  # numpy: not at Django's start-up

        results = grading_results(obj)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} – {}</td><td>{}</td><td>{}</td></tr>",
            [_grade_row(model) for model in results["models"]],
        )
        export = reverse("judgerun-grades", args=[obj.pk])
        return format_html(
            "<table><tr><th>model</th><th>mean</th><th>interval</th><th>graded</th>"
            "<th>unparsable</th></tr>{}</table>"
            '<p><a href="{}?format=csv">Per-question scores (CSV)</a> · '
            '<a href="{}?format=json">all grades (JSON)</a></p>',
            rows,
            export,
            export,
        )


# --- studies: "Run LLM judge…" -----------------------------------------------------------------


class JudgeStudyForm(forms.Form):
    judge = forms.ModelChoiceField(
        queryset=LanguageModel.objects.order_by("name"),
        help_text="Any registered model: weights run in a gpu worker, a served one is asked",
    )
    prompt = forms.ModelChoiceField(
        queryset=JudgePrompt.objects.order_by("name", "-version"),
        required=False,
        help_text="Blank: the latest ja_pairwise (ja_grading when grading)",
    )
    grading = forms.BooleanField(
        required=False, help_text="Grade each answer on its own (needs a grading prompt)"
    )
    inconsistent = forms.ChoiceField(
        choices=JudgeRun.Inconsistent.choices,
        initial=JudgeRun.Inconsistent.TIE,
        help_text="A comparison whose two orders disagree",
    )
    max_attempts = forms.IntegerField(
        min_value=1, max_value=20, initial=3, help_text="Tries before a verdict is unparsable"
    )

    def clean(self):
        data = super().clean()
        prompt = data.get("prompt")
        if prompt is None:
            try:
                data["prompt"] = judge_prompt_for(grading=data.get("grading", False))
            except ServiceError as exc:
                self.add_error("prompt", str(exc))
        elif (prompt.kind == JudgePrompt.Kind.GRADING) != data.get("grading", False):
            wanted = "a grading" if data.get("grading") else "a pairwise"
            self.add_error("prompt", f"{prompt} is a {prompt.kind} prompt; pick {wanted} one")
        return data


@admin_action_register(Study, permissions=["judging.add_judgerun", "generation.run_languagemodel"])
@form_action(JudgeStudyForm, "Run an LLM judge", description="Run LLM judge…")
def run_llm_judge(modeladmin, request, queryset, form):
    data = form.cleaned_data
    apply_each(
        modeladmin,
        request,
        queryset,
        lambda study: judge_run_create(
            judge=data["judge"],
            study=study,
            prompt=data["prompt"],
            grading=data["grading"],
            inconsistent=data["inconsistent"],
            max_attempts=data["max_attempts"],
            user=request.user,
        ),
        lambda study, run: (
            f"Queued judge run {run.pk}: {run.judge.name} on {study.name} "
            f"({run.total} verdicts, {run.prompt})."
        ),
        lambda study, exc: f"{study.name}: {exc}",
    )
    return HttpResponseRedirect(reverse("admin:judging_judgerun_changelist"))
