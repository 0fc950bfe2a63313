"""The base of every run admin: the state fields, progress, cancel and retry actions, and the
warning when no worker consumes a queued run's queue."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evalsite.errors import ServiceError

from . import lifecycle, shards
from .kinds import kind_of
from .listing import progress_text, run_progress_url
from .workers import unconsumed_warning

# What every run shows after its own fields and its results, read-only.
RUN_STATE_FIELDS = [
    "error",
    "worker",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "created_by",
]


def progress_bar(
    done: int, total: int, unit: str = "", more: str = "", *, text: str | None = None
) -> SafeString:
    """A run's progress: a bar, then ``text`` (None: its ``progress_text``), every value escaped
    (a live run page updates both in place: runs/static/runs/live.js)."""
    return format_html(
        '<progress class="run-progress" max="{}" value="{}"></progress> '
        '<span class="run-progress-text">{}</span>',
        total,
        done,
        progress_text(done, total, more, unit) if text is None else text,
    )


class QueuedRunWarning:
    """A warning on the change page of a queued run that no worker consumes, and on the
    changelist when any listed run is (the same sentence the ``--wait`` commands print)."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            run = self.get_object(request, unquote(object_id))
            if run is not None:
                self._warn(request, [run])
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        # The page is rendered lazily (TemplateResponse), so a message added now still shows.
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if changelist is not None and request.method == "GET":
            self._warn(request, changelist.result_list)
        return response

    def _warn(self, request, runs) -> None:
        warning = unconsumed_warning(runs)
        if warning:
            self.message_user(request, warning, messages.WARNING)


def _apply(modeladmin, request, queryset, change, done: str) -> None:
    for run in queryset:
        try:
            change(run, request.user)
        except ServiceError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
        else:
            modeladmin.message_user(request, done.format(label=kind_of(run).label, id=run.pk))


class RunAdmin(QueuedRunWarning, admin.ModelAdmin):
    """Runs are made by their services (an admin action elsewhere, the API, a command): here
    they are read-only, with progress, cancel and retry. A subclass lists what the run was asked
    to do in ``run_fields`` and what came of it in ``result_fields``; the page shows those around
    status and progress, then the state every run has. A subclass with ``fieldsets`` shows
    those instead, all read-only."""

    run_fields: list[str] = []
    result_fields: list[str] = []
    actions = ["retry_runs", "cancel_runs"]
    retry_description = "Retry (do only what is missing)"
    # Every run's page follows the run live while it is queued or running (a subclass's own
    # template extends this one).
    change_form_template = "admin/runs/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, unquote(object_id)) if request.method == "GET" else None
        extra = {}
        if run is not None:
            extra = {
                "run_progress_url": run_progress_url(run),
                "run_active": run.status in run.ACTIVE,
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def get_readonly_fields(self, request, obj=None):
        if self.fieldsets:
            return [name for _, options in self.fieldsets for name in options["fields"]]
        return [
            *self.run_fields,
            "status",
            "progress",
            "shard_list",
            *self.result_fields,
            *RUN_STATE_FIELDS,
        ]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="progress")
    def progress(self, obj) -> SafeString:
        kind = kind_of(obj)
        done, total = getattr(obj, kind.done), getattr(obj, kind.total)
        if kind.progress_text:
            return progress_bar(done, total, text=kind.progress_text(obj))
        return progress_bar(done, total, more=f" {kind.unit}")

    @admin.display(description="shards")
    def shard_list(self, obj) -> SafeString | str:
        """Each shard of a split run: its range of items, status, worker and tries."""
        rows = list(shards.of_run(obj).order_by("index")) if obj is not None else []
        if not rows:
            return "one (not split)"
        return format_html_join(
            format_html("<br>"),
            "{}: items {} to {}, {} ({}, {} tries)",
            (
                (s.index, s.start + 1, s.stop, s.status, s.worker or "no worker", s.attempts)
                for s in rows
            ),
        )

    @admin.action(description="Cancel")
    def cancel_runs(self, request, queryset):
        _apply(self, request, queryset, lifecycle.cancel, "{label} {id} cancelled.")

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "retry_runs" in actions:
            func, name, _ = actions["retry_runs"]
            actions["retry_runs"] = (func, name, self.retry_description)
        return actions

    @admin.action(description="Retry")
    def retry_runs(self, request, queryset):
        _apply(self, request, queryset, self.retry, "{label} {id} requeued.")

    def retry(self, run, user):
        """The kind's retry (a subclass may check more first)."""
        return lifecycle.retry(run, user)
