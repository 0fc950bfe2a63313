"""Votes: the assignment a vote is for, and the vote write (one path per database, its
columns read from the Vote model)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from evalsite.errors import ServiceError, StateConflict

from ..models import Assignment, Study, Vote
from .sql import MAY_ANNOTATE, done, in_pool, params, remaining, sql, stored
from .state import STUDY_NOT_OPEN, Progress

VOTE_CONFLICT = "this pair already has a different vote from you; votes are never overwritten"
COMPARISON_FULL = "this pair has all the votes it needs (your time on it ran out); thank you"
QUOTA_REACHED = "you have given all the votes this study asks of you; thank you"
SKIPPED = "you skipped this pair"
# "tie": both good (FastChat's ``tie``); "tie_bothbad": both bad (``tie (bothbad)``).
CHOICES = ("left", "tie", "tie_bothbad", "right")
BAD_CHOICE = "choice must be one of " + ", ".join(f'"{c}"' for c in CHOICES)
TIE_KINDS = {"tie": Vote.TieKind.BOTH_GOOD, "tie_bothbad": Vote.TieKind.BOTH_BAD}


class VoteConflict(StateConflict):
    """The vote cannot be taken as asked (HTTP 409, through the API's exception handler)."""


# Whether the user may annotate, their own assignment in an open study (anyone else's token is
# unknown), and their progress without it. One row even without an assignment (its id NULL).
_VOTE_TARGET_SQL = sql(
    """SELECT a.id, a.study_id, a.comparison_id, a.annotator_id, a.token, a.{left}, a.status,
              a.first_delivered_at, a.lease_expires_at, {may} AS may_annotate,
              s.votes_per_comparison AS k, s.quota AS quota, pair.gold AS gold,
              ({done}) AS done, ({remaining}) AS remaining_others
       FROM (SELECT 1 AS one) x
       LEFT JOIN {assignment} a ON a.token = %(token)s AND a.annotator_id = %(annotator)s
       LEFT JOIN {study} s ON s.id = a.study_id AND s.status = %(open)s AND {pool}
       LEFT JOIN {comparison} pair ON pair.id = a.comparison_id""",
    may=MAY_ANNOTATE,
    pool=in_pool("a.study_id"),
    done=done("a.study_id"),
    remaining=remaining("a.study_id", "s.votes_per_comparison", "AND c.id <> a.comparison_id"),
)


@dataclass(frozen=True)
class VoteTarget:
    """The annotator's assignment a vote is for (None: not theirs, or the study is not open),
    and their progress leaving it out."""

    may_annotate: bool
    assignment: Assignment | None
    done: int
    remaining_others: int  # what can still be given to them, this comparison aside

    def progress_after(self, *, created: bool) -> Progress:
        done = self.done + (1 if created else 0)
        total = done + self.remaining_others
        quota = self.assignment.study.quota if self.assignment is not None else None
        if quota is not None:
            total = min(total, max(quota, done))
        return Progress(done=done, total=total)


def vote_target(*, token: str, annotator) -> VoteTarget:
    found = params(study_id=0, annotator=annotator, now=timezone.now(), token=token)
    (row,) = Assignment.objects.raw(_VOTE_TARGET_SQL, found)
    assignment = None
    if row.pk is not None and row.k is not None:
        assignment = row
        # The open study as far as the vote needs it, so that vote_record reads no more.
        assignment.study = stored(
            Study,
            {
                "id": row.study_id,
                "status": Study.Status.OPEN,
                "votes_per_comparison": row.k,
                "quota": row.quota,
            },
        )
        assignment.gold = bool(row.gold)
    return VoteTarget(
        may_annotate=bool(row.may_annotate),
        assignment=assignment,
        done=row.done,
        remaining_others=row.remaining_others,
    )


def _outcome(choice: str, left: str) -> Vote.Outcome:
    """The canonical outcome of a choice between the sides as shown."""
    if choice in TIE_KINDS:
        return Vote.Outcome.TIE
    return Vote.Outcome.A if (choice == "left") == (left == Assignment.Side.A) else Vote.Outcome.B


class _NoSlot(Exception):
    """The vote was not taken (the comparison is full, or the assignment has a vote already):
    raised inside the transaction so that it rolls back."""


# The columns come from the model, so a field added to Vote is written here too (its default,
# unless the vote sets it).
_VOTE_FIELDS = [f for f in Vote._meta.concrete_fields if not f.primary_key]
# Gold checks have no K; routing may have set a comparison's own target (votes_wanted, in
# place of K); no annotator votes past their quota (they count under a lock of their own in
# the study, taken first: see _vote_insert).
_TAKE_SLOT_SQL = sql(
    """UPDATE {comparison} SET vote_count = vote_count + 1
       WHERE id = %(comparison)s
         AND (vote_count < COALESCE(votes_wanted, %(k)s) OR gold = %(true)s)
         AND (%(quota)s IS NULL OR (SELECT COUNT(*) FROM {assignment} q
                                    WHERE q.study_id = %(study)s AND q.status = %(voted)s
                                      AND q.annotator_id = %(annotator_id)s) < %(quota)s)
       RETURNING vote_count"""
)
_QUOTA_LOCK_SQL = "SELECT pg_advisory_xact_lock(%(quota_lock)s)"
_VOTE_INSERT_SQL = sql(
    """INSERT INTO {vote} ({columns}) SELECT {values} {{source}}
       ON CONFLICT DO NOTHING RETURNING id""",
    columns=", ".join(connection.ops.quote_name(f.column) for f in _VOTE_FIELDS),
    values=", ".join(f"%({f.attname})s" for f in _VOTE_FIELDS),
)
_VOTED_SQL = sql("UPDATE {assignment} SET status = %(voted)s WHERE id = %(assignment_id)s")
# PostgreSQL: the three steps as one statement (data-modifying WITH; SQLite has none). The
# insert reads the slot's RETURNING, so it runs only when a slot was taken, and the assignment
# is marked only when the vote went in. Returns (slot taken, vote id).
_VOTE_ONE_STATEMENT_SQL = sql(
    """WITH slot AS ({take_slot}),
            vote AS ({insert}),
            marked AS (UPDATE {assignment} SET status = %(voted)s
                       WHERE id = %(assignment_id)s AND EXISTS (SELECT 1 FROM vote))
       SELECT EXISTS (SELECT 1 FROM slot), (SELECT id FROM vote)""",
    take_slot=_TAKE_SLOT_SQL,
    insert=_VOTE_INSERT_SQL.format(source="FROM slot"),
)
# SQLite (a SELECT before ON CONFLICT needs a WHERE there): take the slot, insert, mark.
_VOTE_ALONE_SQL = _VOTE_INSERT_SQL.format(source="WHERE 1 = 1")


def vote_record(*, assignment: Assignment, choice: str, comment: str = "") -> tuple[Vote, bool]:
    """Record the annotator's vote; returns (vote, created).

    The same choice again returns the stored vote (created False) and changes nothing; a
    different one raises VoteConflict. A vote after the lease ran out counts only while the
    comparison is below K. Seconds are measured from the pair's first delivery.
    """
    if choice not in CHOICES:
        raise ServiceError(BAD_CHOICE)
    study = assignment.study
    if study.status != Study.Status.OPEN:
        raise ServiceError(STUDY_NOT_OPEN)
    if assignment.status == Assignment.Status.SKIPPED:
        raise VoteConflict(SKIPPED)
    try:
        return _vote_insert(assignment, choice, comment, k=study.votes_per_comparison), True
    except _NoSlot:
        pass
    existing = Vote.objects.filter(assignment=assignment).first()
    if existing is not None:
        if choice_of(existing) != choice:
            raise VoteConflict(VOTE_CONFLICT)
        return existing, False
    quota = study.quota
    if quota is not None and (
        Assignment.objects.filter(
            study_id=study.pk, annotator_id=assignment.annotator_id, status=Assignment.Status.VOTED
        ).count()
        >= quota
    ):
        raise VoteConflict(QUOTA_REACHED)
    # Live or late, no comparison ever gets more than K votes (or its routed target). A live
    # lease on a full comparison (routing settled it after it was handed out) is given up, so
    # that the annotator's next pair is another one rather than this one again.
    Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.LEASED).update(
        status=Assignment.Status.EXPIRED
    )
    raise VoteConflict(COMPARISON_FULL)


@transaction.atomic
def _vote_insert(assignment: Assignment, choice: str, comment: str, *, k: int) -> Vote:
    now = timezone.now()
    values = {
        **{f.attname: f.get_default() for f in _VOTE_FIELDS},
        "comparison_id": assignment.comparison_id,
        "assignment_id": assignment.pk,
        "annotator_id": assignment.annotator_id,
        "outcome": _outcome(choice, assignment.left),
        "shown": "tie" if choice in TIE_KINDS else choice,
        "tie_kind": TIE_KINDS.get(choice, ""),
        "seconds": max(0.0, (now - assignment.first_delivered_at).total_seconds()),
        "comment": comment.strip(),
        "created_at": now,
    }
    found = {
        **{f.attname: f.get_db_prep_save(values[f.attname], connection) for f in _VOTE_FIELDS},
        "comparison": assignment.comparison_id,
        "k": k,
        "voted": Assignment.Status.VOTED.value,
        "true": True,
        "study": assignment.study.pk,
        "quota": assignment.study.quota,
        # One lock per (study, annotator): 2**32 users per study is far beyond any study.
        "quota_lock": (assignment.study.pk << 32) | (assignment.annotator_id & 0xFFFFFFFF),
    }
    # Taking the slot also takes the comparison's row lock (held to the commit), which
    # serialises every vote on the comparison: a second request with the same vote waits for
    # it, then finds the comparison full or conflicts on the vote. Either way nothing is
    # taken: _NoSlot rolls the transaction back, giving the slot back.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            if found["quota"] is not None:
                cursor.execute(_QUOTA_LOCK_SQL, found)
            cursor.execute(_VOTE_ONE_STATEMENT_SQL, found)
            slot, vote_id = cursor.fetchone()
            if not slot or vote_id is None:
                raise _NoSlot
        else:
            cursor.execute(_TAKE_SLOT_SQL, found)
            if cursor.fetchone() is None:
                raise _NoSlot
            cursor.execute(_VOTE_ALONE_SQL, found)
            row = cursor.fetchone()
            if row is None:
                raise _NoSlot
            vote_id = row[0]
            cursor.execute(_VOTED_SQL, found)
    assignment.status = Assignment.Status.VOTED
    return stored(Vote, {"id": vote_id, **values})


def choice_of(vote: Vote) -> str:
    """The choice a vote was cast with (as the API takes and returns it)."""
    if vote.shown == "tie" and vote.tie_kind == Vote.TieKind.BOTH_BAD:
        return "tie_bothbad"
    return vote.shown
