"""Where an annotator stands: whether they may annotate, the open study, the lease they hold,
and their progress, each read in one statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.utils import timezone

from ..models import Study
from .sql import MAY_ANNOTATE, done, fetchone, in_pool, params, remaining, sql

STUDY_NOT_OPEN = "this study is not open"

_MAY_ANNOTATE_SQL = f"SELECT {MAY_ANNOTATE}"
_PROGRESS_SQL = sql(
    "SELECT ({done}), ({remaining})",
    done=done("%(study)s"),
    remaining=remaining("%(study)s", "%(k)s"),
)
# Whether the user may annotate, the open study, the lease they hold in it (if any), and their
# progress. One row even when the study is not open, so that the permission is answered first.
# A study whose pool leaves the annotator out is, for them, not open (404, as for any id).
_LOOP_STATE_SQL = sql(
    """SELECT {may}, s.votes_per_comparison, held.id, held.lease_expires_at > %(now)s,
              ({done}), ({remaining}), s.quota, s.gold_rate, s.sampling
       FROM (SELECT 1 AS one) x
       LEFT JOIN {study} s ON s.id = %(study)s AND s.status = %(open)s AND {pool}
       LEFT JOIN {assignment} held ON held.study_id = s.id AND held.status = %(leased)s
                                   AND held.annotator_id = %(annotator)s""",
    may=MAY_ANNOTATE,
    done=done("%(study)s"),
    remaining=remaining("%(study)s", "s.votes_per_comparison"),
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


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


def annotator_progress(
    *, study_id: int, k: int, annotator, now: datetime | None = None
) -> Progress:
    """done: their votes in the study; total: done + what can still be given to them (K = k)."""
    found = params(study_id=study_id, annotator=annotator, now=now or timezone.now(), k=k)
    done_count, left = fetchone(_PROGRESS_SQL, found)
    return Progress(done=done_count, total=done_count + left)


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
            annotator_progress(
                study_id=s.pk, k=s.votes_per_comparison, annotator=annotator, now=now
            ),
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
    may, k, held_id, held_live, done_count, left, quota, gold_rate, sampling = row
    return LoopState(
        study_id=study_id,
        annotator=annotator,
        now=now,
        may_annotate=bool(may),
        votes_per_comparison=k,
        held_id=held_id,
        held_live=bool(held_live),
        progress=Progress(done=done_count, total=done_count + left),
        quota=quota,
        gold_rate=gold_rate or 0.0,
        sampling=sampling or "uniform",
    )
