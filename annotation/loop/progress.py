"""An annotator's progress in a study, kept rather than counted on every request.

Counted, progress scanned the study's comparisons twice per next pair and once per vote. Kept:

- ``Study.open_pairs``: comparisons still open (a gold check, or fewer votes than its target);
- ``AnnotatorProgress.done``: the annotator's votes in the study;
- ``AnnotatorProgress.closed``: open comparisons they can no longer be given (voted, skipped, or
  their lease ran out and they were given something else).

What is left for them is ``open_pairs - closed``, then no more than their quota allows. The
loop keeps these under the locks it takes anyway: a vote under its comparison's row lock (and,
when it fills the comparison, the study row, then every progress row concerned in annotator
order, so that two filling votes never wait on each other crosswise); a skip and an expiry
under the comparison's row lock. Everything else that changes what is open (routing's targets,
comparisons added or removed, gold, K, imported votes) is caught by database triggers
(migration 0011) that move the study's ``progress_basis`` on; a row whose ``basis`` differs is
counted again by its next reader (``progress_recount``), under the study row's lock.

Live leases of other annotators are not subtracted (they come and go with time): a pair held by
someone else still counts as left until its comparison is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction

from .sql import fetchone, sql


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


def progress_of(*, done: int, closed: int, open_pairs: int, quota: int | None) -> Progress:
    """done, and done + what is left for them (at most what their quota still allows)."""
    left = max(open_pairs - closed, 0)
    if quota is not None:
        left = min(left, max(quota - done, 0))
    return Progress(done=done, total=done + left)


def open_comparison(comparison: str, k: str) -> str:
    """Whether a comparison is open: a gold check (no K), or below its target."""
    c = comparison
    return f"({c}.gold = %(true)s OR {c}.vote_count < COALESCE({c}.votes_wanted, {k}))"


# Read with the loop's first statement (``study`` an alias of the study row, ``annotator`` the
# parameter): the kept counts and whether they are current. Needs ``STORED_JOIN``.
STORED_COLUMNS = """p.done AS p_done, p.closed AS p_closed, {study}.open_pairs AS p_open,
    (p.basis = {study}.progress_basis AND {study}.open_pairs IS NOT NULL) AS p_current"""
STORED_JOIN = sql(
    """LEFT JOIN {progress} p ON p.study_id = {{study}}.id AND p.annotator_id = %(annotator)s"""
)

_FOR_UPDATE = "FOR UPDATE OF {0}" if connection.features.has_select_for_update_of else ""
_LOCK_STUDY_SQL = sql(
    "SELECT progress_basis, votes_per_comparison, quota FROM {study} s WHERE s.id = %(study)s "
    + _FOR_UPDATE.format("s")
)
_OPEN_COUNT = sql(
    "SELECT COUNT(*) FROM {comparison} c WHERE c.study_id = %(study)s AND {open}",
    open=open_comparison("c", "%(k)s"),
)
_DONE_COUNT = sql(
    """SELECT COUNT(*) FROM {assignment}
       WHERE study_id = %(study)s AND annotator_id = %(annotator)s AND status = %(voted)s"""
)
_CLOSED_COUNT = sql(
    """SELECT COUNT(*) FROM {assignment} a JOIN {comparison} c ON c.id = a.comparison_id
       WHERE a.study_id = %(study)s AND a.annotator_id = %(annotator)s
         AND a.status <> %(leased)s AND {open}""",
    open=open_comparison("c", "%(k)s"),
)
_RECOUNT_OPEN_SQL = sql(
    "UPDATE {study} SET open_pairs = ({count}) WHERE id = %(study)s RETURNING open_pairs",
    count=_OPEN_COUNT,
)
_ENSURE_ROW_SQL = sql(
    """INSERT INTO {progress} (study_id, annotator_id, done, closed, basis)
       SELECT id, %(annotator)s, 0, 0, 0 FROM {study} WHERE id = %(study)s
       ON CONFLICT DO NOTHING"""
)
_LOCK_ROW_SQL = sql(
    "SELECT p.id FROM {progress} p WHERE p.study_id = %(study)s AND p.annotator_id = %(annotator)s "
    + _FOR_UPDATE.format("p")
)
_RECOUNT_ROW_SQL = sql(
    """UPDATE {progress} SET done = ({done}), closed = ({closed}), basis = %(basis)s
       WHERE study_id = %(study)s AND annotator_id = %(annotator)s RETURNING done, closed""",
    done=_DONE_COUNT,
    closed=_CLOSED_COUNT,
)
_RECOUNT_SQL = sql(
    "SELECT ({open}), ({done}), ({closed})",
    open=_OPEN_COUNT,
    done=_DONE_COUNT,
    closed=_CLOSED_COUNT,
)


def _values(study_id: int, annotator_id: int, **extra) -> dict:
    return {
        "study": study_id,
        "annotator": annotator_id,
        "true": True,
        "voted": "voted",
        "leased": "leased",
        **extra,
    }


@transaction.atomic
def progress_recount(*, study_id: int, annotator_id: int) -> Progress:
    """Count the study's open comparisons (if forgotten) and the annotator's row again, store
    them, and return the progress. Each count is a statement after the locks it needs (their
    row, then the study's: the order a filling vote takes them in), so it sees every vote that
    committed before, and a vote still running applies its own change to the stored counts
    after."""
    found = _values(study_id, annotator_id)
    with connection.cursor() as cursor:
        cursor.execute(_ENSURE_ROW_SQL, found)
        cursor.execute(_LOCK_ROW_SQL, found)
    row = fetchone(_LOCK_STUDY_SQL, found)
    if row is None:
        return Progress(done=0, total=0)
    basis, k, quota = row
    found.update(k=k, basis=basis)
    (open_pairs,) = fetchone(_RECOUNT_OPEN_SQL, found)
    done, closed = fetchone(_RECOUNT_ROW_SQL, found)
    return progress_of(done=done, closed=closed, open_pairs=open_pairs, quota=quota)


def stored_progress(row, *, study_id: int, annotator_id: int, quota: int | None) -> Progress:
    """The progress from ``STORED_COLUMNS`` as read (p_done, p_closed, p_open, p_current), or
    counted again when it is missing or out of date."""
    done, closed, open_pairs, current = row
    if done is None or not current:
        return progress_recount(study_id=study_id, annotator_id=annotator_id)
    return progress_of(done=done, closed=closed, open_pairs=open_pairs, quota=quota)


def progress_counted(*, study_id: int, annotator_id: int) -> Progress:
    """The progress counted from the votes and assignments (nothing stored read or written):
    what the kept counts must always equal."""
    k, quota = fetchone(
        sql("SELECT votes_per_comparison, quota FROM {study} WHERE id = %(study)s"),
        {"study": study_id},
    )
    open_pairs, done, closed = fetchone(_RECOUNT_SQL, _values(study_id, annotator_id, k=k))
    return progress_of(done=done, closed=closed, open_pairs=open_pairs, quota=quota)


# A lease that ran out and was not renewed: the comparison (locked by the caller) is closed to
# them now, if it is still open.
_EXPIRED_SQL = sql(
    """UPDATE {progress} SET closed = closed + 1
       WHERE study_id = %(study)s AND annotator_id = %(annotator)s"""
)


def progress_lease_expired(*, study_id: int, annotator_id: int, still_open: bool) -> None:
    """Call under the comparison's lock, in the transaction that marks the lease expired."""
    if still_open:
        with connection.cursor() as cursor:
            cursor.execute(_EXPIRED_SQL, _values(study_id, annotator_id))
