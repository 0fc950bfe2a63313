"""Every piece of background work as one list: runs of every registered kind, and work that is
not a run (a sweep drives runs of its own) registered as a ``WorkSource``.

The staff home and the staff API read this; each row says what it is, how far it got, how long
it has been queued or running, and the page it links to. Failures come first, then running,
then queued work, then the rest, newest first within each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Case, IntegerField, Value, When
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from .kinds import all_kinds, kind_of
from .models import Run

# The order of a list of work: what needs a look first.
STATUS_RANK = {
    Run.Status.FAILED: 0,
    Run.Status.RUNNING: 1,
    Run.Status.QUEUED: 2,
}
STATUSES = [s.value for s in Run.Status]
LIMIT = 200

UNKNOWN_KIND_FILTER = "unknown kind {kind!r}; known: {known}"
UNKNOWN_STATUS_FILTER = "unknown status {status!r}; known: {known}"


@dataclass(frozen=True)
class WorkRow:
    kind: str  # the kind's (or its variant's) name: "generation", "grading", "sweep"...
    id: int
    title: str
    status: str
    done: int
    total: int
    unit: str
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str  # the page the row links to
    progress_url: str  # its live progress (JSON), "" when there is none

    @property
    def progress(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def rank(self) -> int:
        return STATUS_RANK.get(self.status, len(STATUS_RANK))

    def phase_seconds(self, now: datetime | None = None) -> float | None:
        """How long it has been queued, or running, or (finished) how long it ran."""
        now = now or timezone.now()
        if self.status == Run.Status.QUEUED:
            return (now - self.created_at).total_seconds()
        if self.status == Run.Status.RUNNING:
            return (now - (self.started_at or self.created_at)).total_seconds()
        if self.finished_at:
            return (self.finished_at - (self.started_at or self.created_at)).total_seconds()
        return None

    def as_dict(self, now: datetime | None = None) -> dict:
        return {
            "kind": self.kind,
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "progress": self.progress,
            "seconds": self.phase_seconds(now),
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "url": self.url,
            "progress_url": self.progress_url,
        }


@dataclass(frozen=True)
class WorkSource:
    """Work that is not a run of a registered kind. ``rows(status, limit)`` lists it (``status``
    None: any) as ``WorkRow``; ``permission`` is what a user needs to see it; ``statuses`` the
    statuses its rows can have."""

    name: str
    rows: Callable[[str | None, int], list[WorkRow]]
    permission: str
    statuses: tuple[str, ...] = tuple(STATUSES)


_SOURCES: dict[str, WorkSource] = {}


def work_source_register(source: WorkSource) -> WorkSource:
    """Register (or replace, by name) work the staff lists show besides runs; call from the
    registering app's ``AppConfig.ready()``."""
    _SOURCES[source.name] = source
    return source


def work_sources() -> tuple[WorkSource, ...]:
    return tuple(_SOURCES.values())


def progress_text(done: int, total: int, more: str = "", unit: str = "") -> str:
    """What follows a run's progress bar: "<unit>done/total (percent%)<more>"."""
    percent = round(100 * done / total) if total else 0
    return f"{unit}{done}/{total} ({percent}%){more}"


def run_page_url(run) -> str:
    """The page a run's row links to: its kind's page, else its admin change page."""
    kind = kind_of(run)
    if kind.page_url is not None:
        return kind.page_url(run)
    meta = run._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[run.pk])
    except NoReverseMatch:
        return ""


def run_progress_url(run) -> str:
    return reverse("run-progress", args=[kind_of(run).slug, run.pk])


def run_row(run) -> WorkRow:
    kind = kind_of(run)
    return WorkRow(
        kind=kind.shown_as(run),
        id=run.pk,
        title=kind.describe(run),
        status=run.status,
        done=getattr(run, kind.done),
        total=getattr(run, kind.total),
        unit=kind.unit,
        error=run.error,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        url=run_page_url(run),
        progress_url=run_progress_url(run),
    )


def kind_names() -> list[str]:
    """Every name a kind filter takes: each kind, each kind's variants, each work source."""
    names = []
    for kind in all_kinds():
        names += [kind.slug, *kind.variants]
    return [*names, *_SOURCES]


def _rank():
    return Case(
        *[When(status=s, then=Value(r)) for s, r in STATUS_RANK.items()],
        default=Value(len(STATUS_RANK)),
        output_field=IntegerField(),
    )


def work_rows(*, user, kind: str = "", status: str = "", limit: int = LIMIT) -> list[WorkRow]:
    """The work ``user`` may view (each kind's own view permission), filtered by kind name
    and status ("" for any), failures first; ValueError naming a filter that is not one."""
    if kind and kind not in kind_names():
        raise ValueError(UNKNOWN_KIND_FILTER.format(kind=kind, known=", ".join(kind_names())))
    if status and status not in STATUSES:
        raise ValueError(UNKNOWN_STATUS_FILTER.format(status=status, known=", ".join(STATUSES)))
    rows: list[WorkRow] = []
    for run_kind in all_kinds():
        model = run_kind.model
        if not user.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}"):
            continue
        found = model.objects.select_related(*run_kind.related)
        if kind == run_kind.slug:
            for variant in run_kind.variants.values():
                found = found.exclude(**variant)
        elif kind in run_kind.variants:
            found = found.filter(**run_kind.variants[kind])
        elif kind:
            continue
        if status:
            found = found.filter(status=status)
        found = found.annotate(rank=_rank()).order_by("rank", "-created_at")
        rows += [run_row(run) for run in found[:limit]]
    for source in _SOURCES.values():
        if kind and kind != source.name:
            continue
        if not user.has_perm(source.permission) or (status and status not in source.statuses):
            continue
        rows += source.rows(status or None, limit)
    rows.sort(key=lambda r: r.created_at, reverse=True)
    rows.sort(key=lambda r: r.rank)
    return rows[:limit]
