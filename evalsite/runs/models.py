"""The abstract run: what every kind of background run has (status, lease, tries, timings)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Run(models.Model):
    """What every kind of background run has: its lease (worker, heartbeat), tries and timings.

    evalsite/runs/lifecycle.py claims, heartbeats, requeues, cancels and retries rows of any
    subclass; each one declares ``stale_check_index`` under its own (kept) name. While a run is
    queued, ``heartbeat_at`` is when its message was last sent (None: when the row was made).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @staticmethod
    def stale_check_index(name: str) -> models.Index:
        """The stale-run check (lifecycle.requeue_stale): running runs ordered by heartbeat."""
        return models.Index(fields=["status", "heartbeat_at"], name=name)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class CountedRun(Run):
    """A run whose progress is a count: ``done`` of ``total`` items (answers, verdicts, tasks).

    A subclass with constraints of its own lists ``*CountedRun.Meta.constraints`` first."""

    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)

    class Meta(Run.Meta):
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(done__lte=F("total")) | Q(total=0),
                name="%(app_label)s_%(class)s_done_le_total",
            ),
        ]
