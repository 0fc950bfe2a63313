"""Fine-tune runs: read-only pages with progress and the loss chart; cancel, and resume (the
spine's retry: a run continues from its last checkpoint). The fine-tune action's form (SFT on
data sets, or DPO on preference pairs) and the preference data sets' pages."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header
from django.utils.safestring import SafeString

from evalsite.exports import file_name
from evalsite.runs.admin import RunAdmin

from ..engine import charts
from ..models import FineTuneLog, FineTuneRun, InstructionDataset, PreferenceDataset
from ..params import FINETUNE_FIELDS
from ..training.finetune import NO_DATASETS
from ..training.overlap import finetune_overlap
from ..training.preferences import preferences_jsonl
from .base import ExtraPages
from .forms import FineTuneForm

NO_PREFERENCES = "method dpo trains on preference pairs: choose a preference data set"
DPO_TAKES_NO_DATASETS = "method dpo trains on the preference pairs only; leave data sets empty"


class FineTuneActionForm(FineTuneForm):
    """The fine-tune action's form: data sets for SFT, or a preference data set for DPO."""

    datasets = forms.ModelMultipleChoiceField(
        queryset=InstructionDataset.objects.all(),
        required=False,
        help_text="SFT methods (lora, full, qlora)",
    )
    preferences = forms.ModelChoiceField(
        queryset=PreferenceDataset.objects.all(),
        required=False,
        help_text="method dpo: preference pairs (export a study's votes first)",
    )

    def clean(self):
        data = super().clean()
        dpo = data.get("method") == FineTuneRun.Method.DPO
        if dpo and data.get("preferences") is None:
            self.add_error("preferences", NO_PREFERENCES)
        if dpo and data.get("datasets"):
            self.add_error("datasets", DPO_TAKES_NO_DATASETS)
        if not dpo and not data.get("datasets"):
            self.add_error("datasets", NO_DATASETS)
        return data


@admin.register(FineTuneRun)
class FineTuneRunAdmin(ExtraPages, RunAdmin):
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
    fieldsets = [
        (
            "Progress",
            {"fields": ["status", "progress", "last_loss", "metrics", "loss_chart", "error"]},
        ),
        (
            "Data",
            {
                "fields": [
                    "base_model",
                    "template",
                    "data_mix",
                    "training_overlap",
                    "preferences",
                    "train_examples",
                    "eval_examples",
                    "skipped_examples",
                    "train_tokens",
                ]
            },
        ),
        ("Method and hyper-parameters", {"fields": ["method", *FINETUNE_FIELDS]}),
        (
            "Output",
            {
                "fields": [
                    "model_name",
                    "result_model",
                    "report_to",
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
    # Runs are made by "Fine-tune on a data set…" on a model, the API or `manage.py finetune`.
    actions = ["cancel_runs", "resume_runs"]
    retry_description = "Resume from the last checkpoint"
    pages = (
        ("<path:object_id>/loss-chart.svg", "loss_chart_view", "generation_finetunerun_loss_chart"),
    )

    def loss_chart_view(self, request, object_id):
        """The run's loss chart as an SVG file: the site's policy (img-src 'self') shows it as an
        image with nothing inline; staff who may view the run may see it."""
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        entries = run.log_entries.order_by("step").values_list("kind", "step", "loss")
        train = [(step, loss) for kind, step, loss in entries if kind == FineTuneLog.Kind.TRAIN]
        held_out = [(step, loss) for kind, step, loss in entries if kind == FineTuneLog.Kind.EVAL]
        svg = charts.loss_chart(train, held_out, total_steps=run.total_steps)
        return HttpResponse(svg, content_type="image/svg+xml")

    @admin.display(description="data")
    def data_mix(self, obj: FineTuneRun) -> str:
        if obj.preferences_id:
            return f"preference pairs {obj.preferences.name}"
        return ", ".join(str(source) for source in obj.sources.select_related("dataset"))

    @admin.display(description="overlap with prompt sets")
    def training_overlap(self, obj: FineTuneRun):
        """A warning when the training rows hold evaluation questions (exact or near)."""
        found = finetune_overlap(obj) if not obj.preferences_id else []
        if not found:
            return "none: no prompt set's question is in the training rows"
        return format_html_join(
            "", '<p class="errornote">{}</p>', ((f"Warning: {o.message()}",) for o in found)
        )

    @admin.display(description="last loss")
    def last_loss(self, obj: FineTuneRun) -> str:
        last = obj.log_entries.filter(kind=FineTuneLog.Kind.TRAIN).order_by("-step").first()
        return f"{last.loss:.4f} (step {last.step})" if last else "–"

    @admin.display(description="loss")
    def loss_chart(self, obj: FineTuneRun) -> SafeString:
        return format_html(
            # data-run-live: the live page reloads the chart as the run's steps go by.
            '<img class="loss-chart" src="{}" alt="{}" data-run-live>',
            reverse("admin:generation_finetunerun_loss_chart", args=[obj.pk]),
            "training loss per step and held-out loss per evaluation",
        )

    @admin.action(description=retry_description)
    def resume_runs(self, request, queryset):
        """The spine's retry under the name this action has always had (forms and scripts post
        it)."""
        self.retry_runs(request, queryset)


@admin.register(PreferenceDataset)
class PreferenceDatasetAdmin(ExtraPages, admin.ModelAdmin):
    """Preference pairs made from a study's votes (or imported): read-only, with the JSONL."""

    list_display = ["name", "pairs", "source_study_name", "rendered_for", "created_at"]
    search_fields = ["name", "source_study_name"]
    fields = [
        "name",
        "description",
        "source",
        "source_study_id",
        "source_study_name",
        "rendered_for",
        "stats",
        "jsonl",
        "used_by",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # `manage.py export_preferences`, or "Export votes as preference pairs…"

    pages = (("<path:object_id>/pairs.jsonl", "jsonl_view", "generation_preferencedataset_jsonl"),)

    def jsonl_view(self, request, object_id):
        dataset = self.get_object(request, unquote(object_id))
        if dataset is None:
            raise Http404
        if not self.has_view_permission(request, dataset):
            raise PermissionDenied
        response = HttpResponse(preferences_jsonl(dataset), content_type="application/jsonl")
        name = file_name(f"{dataset.name}.jsonl")
        response["Content-Disposition"] = content_disposition_header(True, name)
        return response

    @admin.display(description="pairs")
    def pairs(self, obj: PreferenceDataset) -> int:
        return obj.pairs.count()

    @admin.display(description="pairs as JSONL")
    def jsonl(self, obj: PreferenceDataset) -> SafeString:
        url = reverse("admin:generation_preferencedataset_jsonl", args=[obj.pk])
        return format_html('<a href="{}">{}.jsonl</a> (prompt, chosen, rejected)', url, obj.name)

    @admin.display(description="fine-tune runs")
    def used_by(self, obj: PreferenceDataset) -> str:
        return ", ".join(str(run) for run in obj.finetune_runs.all()) or "-"
