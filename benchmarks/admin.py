"""Staff admin for benchmark runs: runs with their results (read-only; cancel and retry), every
example the model saw (filter by run, task, right or wrong), and the "Run benchmarks…" action on
models. generation must not import benchmarks: the action is added here by extending whatever
admin is registered for LanguageModel (as judging extends the Study admin)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

import generation.admin  # noqa: F401 - registers the LanguageModel admin extended below
from evalsite.admin_helpers import admin_action_register, form_action
from evalsite.runs.admin import RunAdmin
from generation.admin.base import ReadOnlyAdmin, start_each
from generation.models import LanguageModel

from .catalog import BROKEN, available_tasks, task_rows
from .models import BenchmarkResult, BenchmarkRun, BenchmarkSample, PromptMode, Scoring
from .runs import SYSTEM_LIMIT, benchmark_run_create


def _pre(text: str) -> SafeString:
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0; max-height: 20em; overflow: auto">{}</pre>',
        text,
    )


class BenchmarkResultInline(admin.TabularInline):
    model = BenchmarkResult
    fields = [
        "task",
        "metric",
        "value",
        "stderr",
        "n",
        "num_fewshot",
        "scoring",
        "prompt_format",
        "harness_version",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BenchmarkRun)
class BenchmarkRunAdmin(RunAdmin):
    list_display = ["id", "model", "task_list", "scoring", "num_fewshot", "status", "progress"]
    list_filter = ["status", "scoring", "model"]
    list_select_related = ["model"]
    run_fields = [
        "model",
        "tasks",
        "num_fewshot",
        "scoring",
        "limit",
        "batch_size",
        "seed",
        "params",
        "prompt",
        "system_instruction",
        "fewshot_as_multiturn",
    ]
    result_fields = ["samples_link", "harness_version", "task_source"]
    inlines = [BenchmarkResultInline]
    retry_description = "Retry (missing tasks)"

    @admin.display(description="tasks")
    def task_list(self, obj: BenchmarkRun) -> str:
        return ", ".join(obj.tasks)

    @admin.display(description="per-example outputs")
    def samples_link(self, obj: BenchmarkRun) -> SafeString:
        url = reverse("admin:benchmarks_benchmarksample_changelist")
        wrong = obj.samples.filter(correct=False).count()
        return format_html(
            '<a href="{}?run__id__exact={}">{} examples</a> · '
            '<a href="{}?run__id__exact={}&correct__exact=0">{} wrong</a>',
            url,
            obj.pk,
            obj.samples.count(),
            url,
            obj.pk,
            wrong,
        )


@admin.register(BenchmarkSample)
class BenchmarkSampleAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every example as the model saw and answered it: format failures show here."""

    list_display = ["run", "task", "doc_id", "prompt_text", "target", "output_text", "correct"]
    list_filter = ["correct", "task", "run"]
    list_select_related = ["run__model"]
    search_fields = ["prompt", "target", "output"]
    readonly_fields = [
        "run",
        "task",
        "doc_id",
        "prompt_text",
        "messages",
        "target",
        "output_text",
        "correct",
    ]
    fields = [*readonly_fields, "metrics"]
    list_per_page = 50

    @admin.display(description="prompt")
    def prompt_text(self, obj: BenchmarkSample) -> SafeString:
        return _pre(obj.prompt)

    @admin.display(description="output")
    def output_text(self, obj: BenchmarkSample) -> SafeString:
        return _pre(obj.output)


# --- models: "Run benchmarks…" -----------------------------------------------------------------


def _task_choices() -> list[tuple[str, str]]:
    rows = sorted(available_tasks().tasks.values(), key=lambda i: (i.source != "custom", i.name))
    return [
        (
            info.name,
            f"{info.name} (group: {len(info.members)} tasks)"
            if info.kind == "group"
            else f"{info.name} ({info.output_type}, {info.source})",
        )
        for info in rows
    ]


TASKS_HELP = (
    "lm-eval tasks: the team's own (BENCHMARK_TASK_DIRS) and lm-eval's Japanese group (its "
    "datasets come from the Hugging Face hub)"
)
LEFT_OUT_HELP = "Left out, because they cannot be read: {files}"


def _tasks_help() -> str:
    broken = [row for row in task_rows() if row["kind"] == BROKEN]
    if not broken:
        return TASKS_HELP
    files = "; ".join(f"{row['path']} ({row['error']})" for row in broken)
    return f"{TASKS_HELP}. {LEFT_OUT_HELP.format(files=files)}"


class BenchmarkForm(forms.Form):
    tasks = forms.MultipleChoiceField(
        choices=_task_choices,
        widget=forms.CheckboxSelectMultiple,
    )
    num_fewshot = forms.IntegerField(min_value=0, max_value=32, initial=0, label="Few-shot")
    scoring = forms.ChoiceField(
        choices=Scoring.choices,
        initial=Scoring.LOGLIKELIHOOD,
        help_text="How multiple-choice tasks are scored; generative tasks always generate",
    )
    limit = forms.IntegerField(
        min_value=1, required=False, help_text="Examples per task (blank: all)"
    )
    prompt = forms.ChoiceField(
        choices=PromptMode.choices,
        initial=PromptMode.TEMPLATE,
        label="Prompt",
        help_text=(
            "The model's template renders each example as generation does; raw text gives the "
            "task's own text (served models are always sent messages)"
        ),
    )
    system_instruction = forms.CharField(
        required=False,
        strip=False,
        max_length=SYSTEM_LIMIT,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="System instruction",
        help_text=("Replaces the template's system prompt (blank: the template's own)"),
    )
    fewshot_as_multiturn = forms.BooleanField(
        required=False,
        initial=True,
        label="Few-shot as turns",
        help_text=("Few-shot examples as earlier user/assistant turns"),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tasks"].help_text = _tasks_help()


@admin_action_register(
    LanguageModel, permissions=["benchmarks.add_benchmarkrun", "generation.run_languagemodel"]
)
@form_action(BenchmarkForm, "Run benchmarks", description="Run benchmarks…")
def run_benchmarks(modeladmin, request, queryset, form):
    data = form.cleaned_data
    return start_each(
        modeladmin,
        request,
        queryset,
        lambda model: benchmark_run_create(
            model=model,
            tasks=data["tasks"],
            num_fewshot=data["num_fewshot"],
            scoring=data["scoring"],
            limit=data["limit"],
            prompt=data["prompt"],
            system_instruction=data["system_instruction"],
            fewshot_as_multiturn=data["fewshot_as_multiturn"],
            user=request.user,
        ),
        lambda model, run: (
            f"Queued benchmark run {run.pk}: {model.name} on {', '.join(run.tasks)} "
            f"({run.scoring}, {run.num_fewshot}-shot)."
        ),
        "admin:benchmarks_benchmarkrun_changelist",
    )
