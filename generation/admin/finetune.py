"""Fine-tune runs: read-only pages with progress and the loss chart; cancel and resume."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..engine import charts
from ..models import FineTuneLog, FineTuneRun
from ..params import FINETUNE_FIELDS
from ..training.finetune import finetune_run_cancel, finetune_run_resume
from .shared import QueuedRunWarning, progress_bar, run_action


@admin.register(FineTuneRun)
class FineTuneRunAdmin(QueuedRunWarning, admin.ModelAdmin):
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
                    "template",
                    "data_mix",
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

    def get_urls(self):
        chart = path(
            "<path:object_id>/loss-chart.svg",
            self.admin_site.admin_view(self.loss_chart_view),
            name="generation_finetunerun_loss_chart",
        )
        return [chart, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra = {"refresh_seconds": self.REFRESH_SECONDS if run and run.status in run.ACTIVE else 0}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

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
        return ", ".join(str(source) for source in obj.sources.select_related("dataset"))

    @admin.display(description="progress")
    def progress(self, obj: FineTuneRun) -> SafeString:
        return progress_bar(obj.step, obj.total_steps, "step ", f", epoch {obj.epoch:.2f}")

    @admin.display(description="last loss")
    def last_loss(self, obj: FineTuneRun) -> str:
        last = obj.log_entries.filter(kind=FineTuneLog.Kind.TRAIN).order_by("-step").first()
        return f"{last.loss:.4f} (step {last.step})" if last else "–"

    @admin.display(description="loss")
    def loss_chart(self, obj: FineTuneRun) -> SafeString:
        return format_html(
            '<img class="loss-chart" src="{}" alt="{}">',
            reverse("admin:generation_finetunerun_loss_chart", args=[obj.pk]),
            "training loss per step and held-out loss per evaluation",
        )

    cancel_runs = run_action(
        finetune_run_cancel,
        "Fine-tune run {} cancelled.",
        description="Cancel (keeps the last checkpoint)",
    )
    resume_runs = run_action(
        finetune_run_resume,
        "Fine-tune run {} queued to resume.",
        description="Resume from the last checkpoint",
    )
