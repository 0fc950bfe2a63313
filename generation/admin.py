from __future__ import annotations

import json
import re
from collections.abc import Sequence

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from . import services
from .importers import ImportFormatError
from .models import (
    Answer,
    DatasetAugmentation,
    FineTuneLog,
    FineTuneRun,
    GenerationRun,
    InstructionDataset,
    InstructionExample,
    LanguageModel,
    PromptSet,
    Question,
)


def _action_page(modeladmin, request, queryset, form, action: str, title: str):
    """The intermediate page of an admin action that needs input (Django's own pattern)."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "queryset": queryset,
        "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return render(request, "admin/generation/action_form.html", context)


def _each_run(modeladmin, request, queryset, service, done: str) -> None:
    """Apply a run service (cancel, retry, resume) to each selected run and say what happened."""
    for run in queryset:
        try:
            service(run=run)
        except services.ServiceError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
        else:
            modeladmin.message_user(request, done.format(run.pk))


class QuestionInline(admin.TabularInline):
    model = Question
    extra = 0
    fields = ["position", "category", "external_id", "text"]

    def has_change_permission(self, request, obj=None):
        # A set with answers is read-only: edit by importing a new set.
        return obj is None or not obj.has_answers

    has_add_permission = has_change_permission
    has_delete_permission = has_change_permission


class PromptSetImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(help_text="CSV with a 'question' column, or JSONL (see README)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    replace = forms.BooleanField(required=False, help_text="rebuild a set of that name")


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ["name", "question_count", "source", "created_at"]
    search_fields = ["name"]
    inlines = [QuestionInline]
    change_list_template = "admin/generation/promptset/change_list.html"

    @admin.display(description="questions")
    def question_count(self, obj: PromptSet) -> int:
        return obj.questions.count()

    def has_delete_permission(self, request, obj=None):
        return obj is None or not obj.has_answers

    def get_urls(self):
        extra = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="generation_promptset_import",
            )
        ]
        return extra + super().get_urls()

    def import_view(self, request: HttpRequest):
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = PromptSetImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                prompt_set = services.prompt_set_import(
                    name=form.cleaned_data["name"],
                    data=upload.read(),
                    filename=upload.name,
                    replace=form.cleaned_data["replace"],
                    description=form.cleaned_data["description"],
                )
            except (ImportFormatError, services.ServiceError) as exc:
                form.add_error("file", str(exc))
            else:
                self.message_user(
                    request,
                    f"Imported {prompt_set.questions.count()} questions into {prompt_set.name}.",
                )
                return HttpResponseRedirect(
                    reverse("admin:generation_promptset_change", args=[prompt_set.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import a prompt set",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/generation/import_form.html", context)


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ["prompt_set", "position", "category", "short_text"]
    list_filter = ["prompt_set", "category"]
    search_fields = ["text", "external_id"]

    @admin.display(description="text")
    def short_text(self, obj: Question) -> str:
        return obj.text[:80]

    def has_change_permission(self, request, obj=None):
        return obj is None or not obj.prompt_set.has_answers

    has_delete_permission = has_change_permission


class GenerateForm(forms.Form):
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    seed = forms.IntegerField(initial=0)
    batch_size = forms.IntegerField(initial=8, min_value=1, max_value=512)
    params = forms.CharField(
        required=False,
        initial="{}",
        help_text='overrides of the model defaults as JSON, e.g. {"max_new_tokens": 256}',
    )

    def clean_params(self) -> dict:
        raw = self.cleaned_data["params"] or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    list_display = ["name", "name_or_path", "prompt_format", "base_model", "trust_remote_code"]
    list_filter = ["prompt_format"]
    search_fields = ["name", "name_or_path", "maker"]
    actions = ["generate_answers", "fine_tune", "merge_adapter"]

    def get_readonly_fields(self, request, obj=None):
        # Remote code runs inside the worker: only a superuser may allow it.
        return [] if request.user.is_superuser else ["trust_remote_code"]

    @admin.action(description="Generate answers for a prompt set…")
    def generate_answers(self, request, queryset):
        form = GenerateForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for model in queryset:
                try:
                    run = services.generation_run_create(
                        model=model,
                        prompt_set=form.cleaned_data["prompt_set"],
                        params=form.cleaned_data["params"],
                        seed=form.cleaned_data["seed"],
                        batch_size=form.cleaned_data["batch_size"],
                        user=request.user,
                    )
                except services.ServiceError as exc:
                    self.message_user(request, f"{model.name}: {exc}", messages.ERROR)
                else:
                    self.message_user(request, f"Queued run {run.pk} for {model.name}.")
            return HttpResponseRedirect(reverse("admin:generation_generationrun_changelist"))
        return _action_page(self, request, queryset, form, "generate_answers", "Generate answers")

    @admin.action(description="Fine-tune on a data set…")
    def fine_tune(self, request, queryset):
        form = FineTuneForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for model in queryset:
                try:
                    run = services.finetune_run_create(
                        base_model=model,
                        datasets=form.cleaned_data["mix"],
                        method=form.cleaned_data["method"],
                        params=form.params(),
                        model_name=form.cleaned_data["model_name"] if len(queryset) == 1 else "",
                        user=request.user,
                    )
                except services.ServiceError as exc:
                    self.message_user(request, f"{model.name}: {exc}", messages.ERROR)
                else:
                    self.message_user(request, f"Queued fine-tune run {run.pk} for {model.name}.")
            return HttpResponseRedirect(reverse("admin:generation_finetunerun_changelist"))
        return _action_page(self, request, queryset, form, "fine_tune", "Fine-tune")

    @admin.action(description="Merge LoRA adapter into a standalone model…")
    def merge_adapter(self, request, queryset):
        form = MergeForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for model in queryset:
                name = form.cleaned_data["name"] if len(queryset) == 1 else ""
                try:
                    name = services.language_model_merge_request(model=model, name=name)
                except services.ServiceError as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                else:
                    self.message_user(
                        request,
                        f"Merging {model.name} on the gpu queue; it appears here as {name}.",
                    )
            return HttpResponseRedirect(reverse("admin:generation_languagemodel_changelist"))
        return _action_page(self, request, queryset, form, "merge_adapter", "Merge the adapter")


@admin.register(GenerationRun)
class GenerationRunAdmin(admin.ModelAdmin):
    list_display = ["id", "model", "prompt_set", "status", "progress", "imported", "created_at"]
    list_filter = ["status", "imported", "model", "prompt_set"]
    readonly_fields = [
        "model",
        "prompt_set",
        "params",
        "seed",
        "batch_size",
        "imported",
        "status",
        "done",
        "total",
        "error",
        "worker",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "created_by",
    ]
    actions = ["retry_runs", "cancel_runs"]

    def has_add_permission(self, request):
        return False  # runs are made by the "generate answers" action, the API or the command

    @admin.display(description="progress")
    def progress(self, obj: GenerationRun) -> str:
        percent = round(100 * obj.done / obj.total) if obj.total else 0
        return format_html(
            '<progress max="{}" value="{}"></progress> {}/{} ({}%)',
            obj.total,
            obj.done,
            obj.done,
            obj.total,
            percent,
        )

    @admin.action(description="Retry (generate missing answers)")
    def retry_runs(self, request, queryset):
        _each_run(self, request, queryset, services.generation_run_retry, "Run {} requeued.")

    @admin.action(description="Cancel")
    def cancel_runs(self, request, queryset):
        _each_run(self, request, queryset, services.generation_run_cancel, "Run {} cancelled.")


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    list_display = ["run", "question", "short_text", "new_tokens"]
    list_filter = ["run__model", "run__prompt_set"]
    search_fields = ["text"]
    readonly_fields = ["run", "question", "text", "new_tokens", "created_at"]

    @admin.display(description="answer")
    def short_text(self, obj: Answer) -> str:
        return obj.text[:80]

    def has_add_permission(self, request):
        return False


# --- instruction data sets ---------------------------------------------------------------------


class InstructionDatasetImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(
        help_text="JSONL, JSON or CSV with instruction / input / output, or JSONL 'messages'"
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    drop_duplicates = forms.BooleanField(
        required=False, help_text="keep only the first of rows repeated exactly"
    )
    tokenizer_model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.all(),
        required=False,
        help_text="count tokens as this model will be trained on the set (its tokenizer "
        "and prompt format)",
    )


class TokenStatsForm(forms.Form):
    model = forms.ModelChoiceField(queryset=LanguageModel.objects.all())


class AugmentForm(GenerateForm):
    prompt_set = None  # the data set's unique instructions are the questions
    model = forms.ModelChoiceField(queryset=LanguageModel.objects.all())
    name = forms.CharField(max_length=200, help_text="name of the new data set")

    field_order = ["model", "name", "seed", "batch_size", "params"]


class MergeForm(forms.Form):
    name = forms.CharField(
        max_length=200, required=False, help_text="name of the merged model (blank: <name>-merged)"
    )


HYPERPARAMETER_FIELDS = [
    "learning_rate",
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "seed",
    "eval_fraction",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "gradient_checkpointing",
    "save_steps",
    "save_total_limit",
]


class FineTuneForm(forms.ModelForm):
    """The run's settings; the data sets and the rows to sample from each form the mix."""

    datasets = forms.ModelMultipleChoiceField(queryset=InstructionDataset.objects.all())
    rows = forms.CharField(
        required=False,
        help_text="rows to sample from a data set, e.g. 'dolly-ja=1000, ichikara=500' "
        "(sampled with the seed); data sets not named here give every row",
    )
    learning_rate = forms.FloatField(
        required=False,
        min_value=0,
        help_text=f"blank: 2e-4 for LoRA, {services.FULL_LEARNING_RATE:g} for full fine-tuning",
    )

    class Meta:
        model = FineTuneRun
        fields = ["method", "model_name", *HYPERPARAMETER_FIELDS]

    ROWS_ITEM = re.compile(r"^\s*(?P<name>.+?)\s*=\s*(?P<rows>\d+)\s*$")

    def clean(self):
        data = super().clean()
        chosen = {d.name: d for d in data.get("datasets") or []}
        wanted: dict[str, int] = {}
        for item in filter(str.strip, re.split(r"[,\n]", data.get("rows") or "")):
            match = self.ROWS_ITEM.match(item)
            if match is None:
                self.add_error("rows", f"{item.strip()!r} is not 'data set name=rows'")
            elif match["name"] not in chosen:
                self.add_error("rows", f"{match['name']!r} is not one of the chosen data sets")
            else:
                wanted[match["name"]] = int(match["rows"])
        data["mix"] = [(dataset, wanted.get(name)) for name, dataset in chosen.items()]
        return data

    def params(self) -> dict:
        values = {key: self.cleaned_data.get(key) for key in HYPERPARAMETER_FIELDS}
        if values["learning_rate"] is None:
            del values["learning_rate"]  # the method's default
        values["target_modules"] = values.get("target_modules") or []
        return values


SAMPLE_ROWS = 10


@admin.register(InstructionDataset)
class InstructionDatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "row_count", "unique_instructions", "duplicates", "source"]
    search_fields = ["name", "description"]
    readonly_fields = [
        "source",
        "statistics",
        "sample",
        "derived_from",
        "created_at",
        "created_by",
    ]
    fields = ["name", "description", *readonly_fields]
    change_list_template = "admin/generation/instructiondataset/change_list.html"
    actions = ["token_statistics", "augment"]

    def has_add_permission(self, request):
        return False  # data sets come from a file: "Import from file", the API or the command

    @admin.display(description="rows")
    def row_count(self, obj: InstructionDataset):
        return obj.stats.get("rows")

    @admin.display(description="unique instructions")
    def unique_instructions(self, obj: InstructionDataset):
        return obj.stats.get("unique_instructions")

    @admin.display(description="duplicate rows")
    def duplicates(self, obj: InstructionDataset):
        return obj.stats.get("duplicate_rows")

    @admin.display(description="statistics")
    def statistics(self, obj: InstructionDataset) -> SafeString:
        return stats_table(obj.stats)

    @admin.display(description="first rows")
    def sample(self, obj: InstructionDataset) -> SafeString:
        rows = obj.examples.order_by("position")[:SAMPLE_ROWS]
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((e.position, e.instruction, e.input, e.output) for e in rows),
        )
        everything = reverse("admin:generation_instructionexample_changelist")
        return format_html(
            "<table><tr><th>#</th><th>instruction</th><th>input</th><th>output</th></tr>{}"
            '</table><p><a href="{}?dataset__id__exact={}">all rows</a></p>',
            body,
            everything,
            obj.pk,
        )

    def get_urls(self):
        extra = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="generation_instructiondataset_import",
            )
        ]
        return extra + super().get_urls()

    def import_view(self, request: HttpRequest):
        if not request.user.has_perm("generation.add_instructiondataset"):
            return HttpResponseRedirect(reverse("admin:index"))
        form = InstructionDatasetImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                dataset = services.instruction_dataset_import(
                    name=form.cleaned_data["name"],
                    data=upload.read(),
                    filename=upload.name,
                    description=form.cleaned_data["description"],
                    drop_duplicates=form.cleaned_data["drop_duplicates"],
                    tokenizer_model=form.cleaned_data["tokenizer_model"],
                    user=request.user,
                )
            except (ImportFormatError, services.ServiceError) as exc:
                form.add_error("file", str(exc))
            else:
                self.message_user(
                    request, f"Imported {dataset.stats['rows']} examples into {dataset.name}."
                )
                return HttpResponseRedirect(
                    reverse("admin:generation_instructiondataset_change", args=[dataset.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import an instruction data set",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/generation/instructiondataset/import_form.html", context)

    @admin.action(description="Compute token statistics with a model's tokenizer…")
    def token_statistics(self, request, queryset):
        form = TokenStatsForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for dataset in queryset:
                try:
                    services.instruction_dataset_token_stats(
                        dataset=dataset, model=form.cleaned_data["model"]
                    )
                except services.ServiceError as exc:
                    self.message_user(request, f"{dataset.name}: {exc}", messages.ERROR)
                else:
                    self.message_user(request, f"Token statistics of {dataset.name} updated.")
            return None
        return _action_page(self, request, queryset, form, "token_statistics", "Token statistics")

    @admin.action(description="Generate answers for this data set's unique instructions…")
    def augment(self, request, queryset):
        form = AugmentForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            if len(queryset) != 1:
                self.message_user(request, "Choose exactly one data set.", messages.ERROR)
                return None
            dataset = queryset[0]
            try:
                augmentation = services.instruction_dataset_augment(
                    dataset=dataset,
                    model=form.cleaned_data["model"],
                    name=form.cleaned_data["name"],
                    params=form.cleaned_data["params"],
                    seed=form.cleaned_data["seed"],
                    batch_size=form.cleaned_data["batch_size"],
                    user=request.user,
                )
            except services.ServiceError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            self.message_user(
                request,
                f"Queued generation run {augmentation.run_id}; data set "
                f"{augmentation.name} is written when it succeeds.",
            )
            return HttpResponseRedirect(
                reverse("admin:generation_generationrun_change", args=[augmentation.run_id])
            )
        return _action_page(self, request, queryset, form, "augment", "Generate answers")


def stats_table(stats: dict) -> SafeString:
    """A data set's statistics as an HTML table (every value escaped)."""
    rows = [
        (label, stats.get(key))
        for key, label in [
            ("rows", "rows"),
            ("rows_in_file", "rows in the file"),
            ("unique_instructions", "unique instructions (instruction + input)"),
            ("duplicate_rows", "exact-duplicate rows"),
            ("dropped_duplicates", "duplicates dropped"),
            ("rows_with_input", "rows with an input"),
        ]
        if key in stats
    ]
    for key, label in [
        ("instruction_chars", "instruction chars"),
        ("output_chars", "output chars"),
    ]:
        if stats.get(key):
            rows.append((label, _percentile_text(stats[key])))
    tokens = stats.get("tokens")
    if tokens:
        where = f"{tokens.get('model')} tokenizer, {tokens.get('prompt_format')} format"
        for part in ("prompt", "answer", "total"):
            rows.append((f"{part} tokens ({where})", _percentile_text(tokens.get(part) or {})))
    augmentation = stats.get("augmentation")
    if augmentation:
        rows.append(("generated by", json.dumps(augmentation, ensure_ascii=False)))
    body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    return format_html("<table>{}</table>", body)


def _percentile_text(values: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


@admin.register(InstructionExample)
class InstructionExampleAdmin(admin.ModelAdmin):
    list_display = ["dataset", "position", "short_instruction", "short_output"]
    list_filter = ["dataset"]
    search_fields = ["instruction", "input", "output"]
    readonly_fields = ["dataset", "position", "instruction", "input", "output"]

    @admin.display(description="instruction")
    def short_instruction(self, obj: InstructionExample) -> str:
        return obj.instruction[:60]

    @admin.display(description="output")
    def short_output(self, obj: InstructionExample) -> str:
        return obj.output[:60]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a data set never changes: import a corrected file under a new name

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DatasetAugmentation)
class DatasetAugmentationAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "run", "run_status", "result", "created_at"]
    readonly_fields = ["source", "run", "name", "result", "created_at"]

    @admin.display(description="status")
    def run_status(self, obj: DatasetAugmentation) -> str:
        return obj.run.status

    def has_add_permission(self, request):
        return False


# --- fine-tune runs ----------------------------------------------------------------------------


CHART_WIDTH, CHART_HEIGHT = 640, 260
CHART_MARGIN = {"left": 56, "right": 12, "top": 14, "bottom": 34}
CHART_MAX_POINTS = 600


def _downsample(points: Sequence[tuple[int, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points: consecutive points averaged in equal buckets."""
    if len(points) <= limit:
        return [(float(x), float(y)) for x, y in points]
    size = len(points) / limit
    out = []
    for i in range(limit):
        bucket = points[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        out.append(
            (
                sum(x for x, _ in bucket) / len(bucket),
                sum(y for _, y in bucket) / len(bucket),
            )
        )
    return out


def loss_chart_svg(
    train: Sequence[tuple[int, float]],
    held_out: Sequence[tuple[int, float]],
    *,
    total_steps: int = 0,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
) -> SafeString:
    """An inline SVG line chart of the training loss per step and the held-out loss per epoch.

    Built on the server with ``format_html`` (every value escaped), so it needs no JS build step
    and works in the admin as it is.
    """
    points = [(s, loss) for s, loss in train if loss == loss]  # NaN never plots
    evals = [(s, loss) for s, loss in held_out if loss == loss]
    if not points and not evals:
        return format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="40" role="img">'
            '<text x="4" y="24">{}</text></svg>',
            width,
            "no loss logged yet",
        )
    m = CHART_MARGIN
    left, right, top, bottom = m["left"], width - m["right"], m["top"], height - m["bottom"]
    losses = [loss for _, loss in points + evals]
    low, high = min(losses), max(losses)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    last_step = max([total_steps, *(s for s, _ in points + evals), 1])

    def x(step: float) -> str:
        return f"{left + (right - left) * step / last_step:.1f}"

    def y(loss: float) -> str:
        return f"{bottom - (bottom - top) * (loss - low) / (high - low):.1f}"

    line = " ".join(f"{x(s)},{y(v)}" for s, v in _downsample(points, CHART_MAX_POINTS))
    eval_line = " ".join(f"{x(s)},{y(v)}" for s, v in evals)
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="3.5" fill="#d9822b"><title>step {}: {}</title></circle>',
        ((x(s), y(v), s, f"{v:.4f}") for s, v in evals),
    )
    grid = format_html_join(
        "",
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>'
        '<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>',
        (
            (left, y(v), right, y(v), left - 4, float(y(v)) + 4, f"{v:.3g}")
            for v in (low + (high - low) * k / 4 for k in range(5))
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" role="img" aria-label="{label}" class="loss-chart">'
        "<title>{label}</title>{grid}"
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/>'
        '<text x="{l}" y="{tb}" font-size="11">0</text>'
        '<text x="{r}" y="{tb}" font-size="11" text-anchor="end">step {last}</text>'
        '<polyline points="{line}" fill="none" stroke="#2a6fdb" stroke-width="1.5"/>'
        '<polyline points="{eval_line}" fill="none" stroke="#d9822b" stroke-dasharray="4 3"/>'
        "{dots}"
        '<text x="{lx}" y="{ty}" font-size="11" fill="#2a6fdb">— training loss</text>'
        '<text x="{ex}" y="{ty}" font-size="11" fill="#d9822b">● held-out loss</text>'
        "</svg>",
        w=width,
        h=height,
        label="loss per step",
        grid=grid,
        l=left,
        r=right,
        b=bottom,
        tb=bottom + 14,
        last=last_step,
        line=line,
        eval_line=eval_line,
        dots=dots,
        lx=left + 60,
        ex=left + 180,
        ty=height - 4,
    )


@admin.register(FineTuneRun)
class FineTuneRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "base_model",
        "method",
        "data_mix",
        "status",
        "progress",
        "last_loss",
        "result_model",
        "created_at",
    ]
    list_filter = ["status", "method", "base_model"]
    change_form_template = "admin/generation/finetunerun/change_form.html"
    fieldsets = [
        (
            "Progress",
            {"fields": ["status", "progress", "last_loss", "loss_chart", "error"]},
        ),
        (
            "Data",
            {
                "fields": [
                    "base_model",
                    "data_mix",
                    "train_examples",
                    "eval_examples",
                    "skipped_examples",
                    "train_tokens",
                ]
            },
        ),
        ("Method and hyper-parameters", {"fields": ["method", *HYPERPARAMETER_FIELDS]}),
        (
            "Output",
            {
                "fields": [
                    "model_name",
                    "result_model",
                    "output_path",
                    "checkpoint",
                    "resumed_from_step",
                ]
            },
        ),
        (
            "Worker",
            {
                "fields": [
                    "worker",
                    "attempts",
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "heartbeat_at",
                ]
            },
        ),
    ]
    actions = ["cancel_runs", "resume_runs"]
    # Seconds between reloads of a run's page while it is queued or running.
    REFRESH_SECONDS = 5

    def get_readonly_fields(self, request, obj=None):
        return [field for _, options in self.fieldsets for field in options["fields"]]

    def has_add_permission(self, request):
        return False  # "Fine-tune on a data set…" on a model, the API or `manage.py finetune`

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra = {"refresh_seconds": self.REFRESH_SECONDS if run and run.status in run.ACTIVE else 0}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @admin.display(description="data")
    def data_mix(self, obj: FineTuneRun) -> str:
        return ", ".join(str(source) for source in obj.sources.select_related("dataset"))

    @admin.display(description="progress")
    def progress(self, obj: FineTuneRun) -> str:
        percent = round(100 * obj.step / obj.total_steps) if obj.total_steps else 0
        return format_html(
            '<progress max="{}" value="{}"></progress> step {}/{} ({}%), epoch {}',
            obj.total_steps,
            obj.step,
            obj.step,
            obj.total_steps,
            percent,
            f"{obj.epoch:.2f}",
        )

    @admin.display(description="last loss")
    def last_loss(self, obj: FineTuneRun) -> str:
        last = obj.log_entries.filter(kind=FineTuneLog.Kind.TRAIN).order_by("-step").first()
        return f"{last.loss:.4f} (step {last.step})" if last else "–"

    @admin.display(description="loss")
    def loss_chart(self, obj: FineTuneRun) -> SafeString:
        entries = obj.log_entries.order_by("step").values_list("kind", "step", "loss")
        train = [(step, loss) for kind, step, loss in entries if kind == FineTuneLog.Kind.TRAIN]
        held_out = [(step, loss) for kind, step, loss in entries if kind == FineTuneLog.Kind.EVAL]
        return loss_chart_svg(train, held_out, total_steps=obj.total_steps)

    @admin.action(description="Cancel (keeps the last checkpoint)")
    def cancel_runs(self, request, queryset):
        _each_run(
            self, request, queryset, services.finetune_run_cancel, "Fine-tune run {} cancelled."
        )

    @admin.action(description="Resume from the last checkpoint")
    def resume_runs(self, request, queryset):
        _each_run(
            self,
            request,
            queryset,
            services.finetune_run_resume,
            "Fine-tune run {} queued to resume.",
        )
