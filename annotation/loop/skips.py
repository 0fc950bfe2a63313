"""Skips: an annotator passes a pair on, with a reason; it goes to someone else (their skipped
assignment frees its slot and keeps them from being given it again), and staff see the list."""

from __future__ import annotations

from django.db import connection

from ..models import Assignment
from .sql import sql
from .votes import VoteConflict

REASONS = tuple(Assignment.SkipReason.values)
BAD_REASON = "reason must be one of " + ", ".join(f'"{r}"' for r in REASONS)
ALREADY_VOTED = "you have voted on this pair already"
OTHER_REASON = "you skipped this pair already, with another reason"

_SKIP_SQL = sql(
    """UPDATE {assignment} SET status = %(skipped)s, skip_reason = %(reason)s
       WHERE id = %(assignment)s AND status IN (%(leased)s, %(expired)s)"""
)


def assignment_skip(*, assignment: Assignment, reason: str) -> bool:
    """Skip the annotator's assignment; returns whether it changed (False: the same skip
    again). A voted pair cannot be skipped, nor a skip given another reason (VoteConflict)."""
    if reason not in REASONS:
        raise ValueError(BAD_REASON)
    with connection.cursor() as cursor:
        cursor.execute(
            _SKIP_SQL,
            {
                "skipped": Assignment.Status.SKIPPED.value,
                "reason": reason,
                "assignment": assignment.pk,
                "leased": Assignment.Status.LEASED.value,
                "expired": Assignment.Status.EXPIRED.value,
            },
        )
        changed = cursor.rowcount == 1
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
