"""Generation runs (made by the "generate answers" action, the API or the command) and their
answers: both read-only here; runs can be cancelled or retried."""

from __future__ import annotations

from django.contrib import admin
from django.utils.safestring import SafeString

from ..models import Answer, GenerationRun
from ..runs import generation_run_cancel, generation_run_retry
from .shared import QueuedRunWarning, progress_bar, run_action


@admin.register(GenerationRun)
class GenerationRunAdmin(QueuedRunWarning, admin.ModelAdmin):
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
    def progress(self, obj: GenerationRun) -> SafeString:
        return progress_bar(obj.done, obj.total)

    retry_runs = run_action(
        generation_run_retry, "Run {} requeued.", description="Retry (generate missing answers)"
    )
    cancel_runs = run_action(generation_run_cancel, "Run {} cancelled.", description="Cancel")


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
