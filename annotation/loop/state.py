"""Where an annotator stands: whether they may annotate, the open study, the lease they hold,
and their progress, each read in one statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.utils import timezone

from ..models import Study
from .progress import STORED_COLUMNS, STORED_JOIN, Progress, stored_progress
from .sql import MAY_ANNOTATE, fetchone, in_pool, params, sql

__all__ = ["Progress", "LoopState", "loop_state", "annotator_progress", "STUDY_NOT_OPEN"]

STUDY_NOT_OPEN = "this study is not open"

_MAY_ANNOTATE_SQL = f"SELECT {MAY_ANNOTATE}"
_PROGRESS_SQL = sql(
    "SELECT {stored}, s.quota FROM {study} s {join} WHERE s.id = %(study)s",
    stored=STORED_COLUMNS.format(study="s"),
    join=STORED_JOIN.format(study="s"),
)
# Whether the user may annotate, the open study, the lease they hold in it (if any), and their
# kept progress (loop/progress.py). One row even when the study is not open, so that the
# permission is answered first. A study whose pool leaves the annotator out is, for them, not
# open (404, as for any id).
_LOOP_STATE_SQL = sql(
    """SELECT {may}, s.votes_per_comparison, held.id, held.lease_expires_at > %(now)s,
              s.quota, s.gold_rate, s.sampling, {stored}
       FROM (SELECT 1 AS one) x
       LEFT JOIN {study} s ON s.id = %(study)s AND s.status = %(open)s AND {pool}
       LEFT JOIN {assignment} held ON held.study_id = s.id AND held.status = %(leased)s
                                   AND held.annotator_id = %(annotator)s
       {join}""",
    may=MAY_ANNOTATE,
    stored=STORED_COLUMNS.format(study="s"),
    join=STORED_JOIN.format(study="s"),
    pool=in_pool("s.id"),
)
_IN_POOL_SQL = sql(
    "SELECT s.id FROM {study} s WHERE s.status = %(open)s AND {pool}", pool=in_pool("s.id")
)


def user_is_annotator(user) -> bool:
    """Annotators (the ``annotators`` group) and staff may judge; nobody else."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    return bool(
        fetchone(_MAY_ANNOTATE_SQL, params(study_id=0, annotator=user, now=timezone.now()))[0]
    )


def annotator_progress(
    *, study_id: int, annotator, k: int | None = None, now: datetime | None = None
) -> Progress:
    """done: their votes in the study; total: done + what can still be given to them (kept,
    loop/progress.py; ``k`` and ``now`` are no longer needed, and kept for callers)."""
    found = params(study_id=study_id, annotator=annotator, now=now or timezone.now())
    row = fetchone(_PROGRESS_SQL, found)
    if row is None:
        return Progress(done=0, total=0)
    return stored_progress(row[:4], study_id=study_id, annotator_id=annotator.pk, quota=row[4])


def open_studies_for(*, annotator) -> list[tuple[Study, Progress]]:
    now = timezone.now()
    found = params(study_id=0, annotator=annotator, now=now)
    with connection.cursor() as cursor:
        cursor.execute(_IN_POOL_SQL, found)
        mine = [row[0] for row in cursor.fetchall()]
    studies = Study.objects.filter(pk__in=mine).order_by("pk")
    return [
        (
            s,
            annotator_progress(study_id=s.pk, annotator=annotator, now=now),
        )
        for s in studies
    ]


def open_study(*, study_id: int, annotator) -> Study | None:
    """The open study if the annotator is in its pool (else None, as for an unknown id)."""
    found = params(study_id=study_id, annotator=annotator, now=timezone.now())
    row = fetchone(_IN_POOL_SQL + " AND s.id = %(study)s", found)
    return Study.objects.filter(pk=row[0]).first() if row else None


@dataclass(frozen=True)
class LoopState:
    """Where an annotator stands in a study, read in one statement at ``now``; the next pair is
    taken from it (``assign.next_pair``)."""

    study_id: int
    annotator: object
    now: datetime
    may_annotate: bool
    votes_per_comparison: int | None  # None: the study is not open
    held_id: int | None  # the assignment they hold (status leased), if any
    held_live: bool  # ... and its lease has not run out
    progress: Progress
    quota: int | None = None  # most votes the annotator may give in the study
    gold_rate: float = 0.0  # share of pairs given as gold checks while any are left
    sampling: str = "uniform"  # Study.Sampling: how the claim picks among eligible pairs

    @property
    def open(self) -> bool:
        return self.votes_per_comparison is not None


def loop_state(*, study_id: int, annotator) -> LoopState:
    """Read before the next pair's transaction, so that a refusal takes no transaction."""
    now = timezone.now()
    row = fetchone(_LOOP_STATE_SQL, params(study_id=study_id, annotator=annotator, now=now))
    may, k, held_id, held_live, quota, gold_rate, sampling = row[:7]
    progress = Progress(done=0, total=0)
    if k is not None:
        progress = stored_progress(
            row[7:], study_id=study_id, annotator_id=annotator.pk, quota=quota
        )
    return LoopState(
        study_id=study_id,
        annotator=annotator,
        now=now,
        may_annotate=bool(may),
        votes_per_comparison=k,
        held_id=held_id,
        held_live=bool(held_live),
        progress=progress,
        quota=quota,
        gold_rate=gold_rate or 0.0,
        sampling=sampling or "uniform",
    )
