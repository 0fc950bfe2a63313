"""The abstract run: what every kind of background run has (status, lease, tries, timings),
and the shard rows that share its lease."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import F, Q


class Lease(models.Model):
    """What a run and each of its shards hold alike: status, the lease (worker, heartbeat),
    tries and timings. While a row is queued, ``heartbeat_at`` is when its message was last
    sent (None: when the row was made)."""

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

    class Meta:
        abstract = True

    @staticmethod
    def stale_check_index(name: str) -> models.Index:
        """The stale-row check (lifecycle.requeue_stale, shards.requeue_stale): running rows
        ordered by heartbeat."""
        return models.Index(fields=["status", "heartbeat_at"], name=name)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Run(Lease):
    """What every kind of background run has: its lease (worker, heartbeat), tries and timings,
    and who asked for it.

    evalsite/runs/lifecycle.py claims, heartbeats, requeues, cancels and retries rows of any
    subclass; each one declares ``stale_check_index`` under its own (kept) name.
    """

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # A run split into shards (evalsite/runs/shards.py) has one row per shard; none: one piece.
    # A generic relation adds no column, so no kind's table changes; deleting a run deletes them.
    shards = GenericRelation("runs.RunShard", related_query_name="%(app_label)s_%(class)s")

    class Meta:
        abstract = True
        ordering = ["-created_at"]


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


class RunShard(Lease):
    """One range of a run's items (``start`` to ``stop``, in the order its kind lists them),
    claimed, heartbeated, requeued and finished on its own row like a run, by any worker.

    The run (of any kind: content type and id) keeps status and progress for all its shards;
    it succeeds when every shard has.
    """

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField()
    run = GenericForeignKey("content_type", "object_id")
    index = models.PositiveSmallIntegerField()
    start = models.PositiveIntegerField()
    stop = models.PositiveIntegerField()

    class Meta:
        ordering = ["content_type", "object_id", "index"]
        constraints = [
            # A shard is claimed by (run, index): one row each, whoever split the run.
            models.UniqueConstraint(
                fields=["content_type", "object_id", "index"], name="runs_runshard_one_per_index"
            ),
            models.CheckConstraint(
                condition=Q(start__lt=F("stop")), name="runs_runshard_range_not_empty"
            ),
        ]
        indexes = [
            # The stale-shard check (shards.requeue_stale): running shards by heartbeat.
            Lease.stale_check_index("runs_shard_status_hb"),
        ]

    def __str__(self) -> str:
        return f"shard {self.index} [{self.start}, {self.stop}) of run {self.object_id}"
