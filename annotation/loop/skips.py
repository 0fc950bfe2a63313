"""Skips: an annotator passes a pair on, with a reason; it goes to someone else (their skipped
assignment frees its slot and keeps them from being given it again), and staff see the list."""

from __future__ import annotations

from django.db import connection, transaction

from ..models import Assignment
from .progress import open_comparison
from .sql import fetchone, sql
from .votes import VoteConflict

REASONS = tuple(Assignment.SkipReason.values)
BAD_REASON = "reason must be one of " + ", ".join(f'"{r}"' for r in REASONS)
ALREADY_VOTED = "you have voted on this pair already"
OTHER_REASON = "you skipped this pair already, with another reason"

# The comparison's lock first (a vote that fills it counts who it is closed to under the same
# lock), whether it is open, and the assignment's status under that lock.
_LOCK_SQL = sql(
    """SELECT {open}, a.status FROM {comparison} c
       JOIN {study} s ON s.id = c.study_id JOIN {assignment} a ON a.comparison_id = c.id
       WHERE c.id = %(comparison)s AND a.id = %(assignment)s {lock}""",
    open=open_comparison("c", "s.votes_per_comparison"),
    lock="FOR UPDATE OF c" if connection.features.has_select_for_update_of else "",
)
# A pair skipped from their hand (a live lease, or one that ran out) is closed to them now;
# one whose lease had already been marked expired was closed to them then.
_CLOSED_SQL = sql(
    """UPDATE {progress} SET closed = closed + 1
       WHERE study_id = %(study)s AND annotator_id = %(annotator)s"""
)
_SKIP_SQL = sql(
    """UPDATE {assignment} SET status = %(skipped)s, skip_reason = %(reason)s
       WHERE id = %(assignment)s AND status IN (%(leased)s, %(expired)s)"""
)


def assignment_skip(*, assignment: Assignment, reason: str) -> bool:
    """Skip the annotator's assignment; returns whether it changed (False: the same skip
    again). A voted pair cannot be skipped, nor a skip given another reason (VoteConflict)."""
    if reason not in REASONS:
        raise ValueError(BAD_REASON)
    found = {
        "skipped": Assignment.Status.SKIPPED.value,
        "reason": reason,
        "assignment": assignment.pk,
        "comparison": assignment.comparison_id,
        "study": assignment.study_id,
        "annotator": assignment.annotator_id,
        "leased": Assignment.Status.LEASED.value,
        "expired": Assignment.Status.EXPIRED.value,
        "true": True,
    }
    with transaction.atomic():
        is_open, status = fetchone(_LOCK_SQL, found)
        with connection.cursor() as cursor:
            cursor.execute(_SKIP_SQL, found)
            changed = cursor.rowcount == 1
            if changed and is_open and status == Assignment.Status.LEASED:
                cursor.execute(_CLOSED_SQL, found)
    if changed:
        assignment.status, assignment.skip_reason = Assignment.Status.SKIPPED, reason
        return True
    current = Assignment.objects.filter(pk=assignment.pk).values_list("status", "skip_reason")
    status, stored_reason = current.get()
    if status == Assignment.Status.VOTED:
        raise VoteConflict(ALREADY_VOTED)
    if stored_reason != reason:
        raise VoteConflict(OTHER_REASON)
    return False
