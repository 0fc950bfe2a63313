"""Votes: the assignment a vote is for, and the vote write (one path per database, its
columns read from the Vote model)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from evalsite.errors import ServiceError, StateConflict

from ..models import Assignment, Study, Vote
from ..sampling import sampling_refresh_soon
from .adaptive import adaptive_decision
from .progress import STORED_COLUMNS, STORED_JOIN, Progress, progress_of, stored_progress
from .sql import MAY_ANNOTATE, cursor, fetchone, in_pool, params, read_datetime, sql, stored
from .staged import staged_vote_taken
from .state import STUDY_NOT_OPEN, LoopState, annotator_progress

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
# unknown), what the next pair needs of the study (so that a vote with the next pair reads
# nothing more), another lease they hold in it, and their kept progress (loop/progress.py).
# One row even without an assignment (its id NULL).
_VOTE_TARGET_SQL = sql(
    """SELECT a.id, a.study_id, a.comparison_id, a.annotator_id, a.token, a.{left}, a.status,
              a.first_delivered_at, a.lease_expires_at, {may} AS may_annotate,
              s.votes_per_comparison AS k, s.quota AS quota, s.gold_rate AS gold_rate,
              s.sampling AS sampling, pair.gold AS gold, held.id AS held_id,
              held.lease_expires_at > %(now)s AS held_live, {stored}
       FROM (SELECT 1 AS one) x
       LEFT JOIN {assignment} a ON a.token = %(token)s AND a.annotator_id = %(annotator)s
       LEFT JOIN {study} s ON s.id = a.study_id AND s.status = %(open)s AND {pool}
       LEFT JOIN {comparison} pair ON pair.id = a.comparison_id
       LEFT JOIN {assignment} held ON held.study_id = s.id AND held.status = %(leased)s
                                   AND held.annotator_id = %(annotator)s AND held.id <> a.id
       {join}""",
    may=MAY_ANNOTATE,
    pool=in_pool("a.study_id"),
    stored=STORED_COLUMNS.format(study="s"),
    join=STORED_JOIN.format(study="s"),
)


@dataclass(frozen=True)
class VoteTarget:
    """The annotator's assignment a vote is for (None: not theirs, or the study is not open),
    their progress before the vote, and where they stand for the next pair."""

    may_annotate: bool
    assignment: Assignment | None
    progress: Progress
    state: LoopState | None = None  # the next pair's starting point (the study is open)

    def progress_after(self, *, created: bool) -> Progress:
        """Without a vote's own answer (a repeated vote or skip): the progress as read."""
        return self.progress


_ASSIGNMENT_COLUMNS = (
    "id",
    "study_id",
    "comparison_id",
    "annotator_id",
    "token",
    "left",
    "status",
    "first_delivered_at",
    "lease_expires_at",
)


def vote_target(*, token: str, annotator) -> VoteTarget:
    now = timezone.now()
    found = params(study_id=0, annotator=annotator, now=now, token=token)
    row = fetchone(_VOTE_TARGET_SQL, found)
    (may_annotate, k, quota, gold_rate, sampling, gold, held_id, held_live) = row[9:17]
    assignment = None
    progress = Progress(done=0, total=0)
    state = None
    if row[0] is not None and k is not None:
        # The assignment as a model instance (its columns only), and the open study as far as
        # the vote needs it, so that vote_record reads no more.
        values = dict(zip(_ASSIGNMENT_COLUMNS, row[:9], strict=True))
        for name in ("first_delivered_at", "lease_expires_at"):
            values[name] = read_datetime(values[name])
        assignment = stored(Assignment, values)
        sampling = sampling or Study.Sampling.UNIFORM
        assignment.study = stored(
            Study,
            {
                "id": assignment.study_id,
                "status": Study.Status.OPEN,
                "votes_per_comparison": k,
                "quota": quota,
                "sampling": sampling,
            },
        )
        assignment.gold = bool(gold)
        progress = stored_progress(
            row[17:21], study_id=assignment.study_id, annotator_id=annotator.pk, quota=quota
        )
        state = LoopState(
            study_id=assignment.study_id,
            annotator=annotator,
            now=now,
            may_annotate=bool(may_annotate),
            votes_per_comparison=k,
            held_id=held_id,
            held_live=bool(held_live),
            progress=progress,
            quota=quota,
            gold_rate=gold_rate or 0.0,
            sampling=sampling,
        )
    return VoteTarget(
        may_annotate=bool(may_annotate),
        assignment=assignment,
        progress=progress,
        state=state,
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
# place of K); adaptive K sets the target it leaves (``wanted_after``, loop/adaptive.py: one
# more, or none); no annotator votes past their quota (their kept ``done``, or their votes counted
# when they have no kept row yet, read under a lock of their own in the study, taken first: see
# _vote_insert). ``filled``: this vote was the last
# the comparison wanted (it is no longer open).
_TAKE_SLOT_SQL = sql(
    """UPDATE {comparison} SET vote_count = vote_count + 1,
                              votes_wanted = COALESCE(%(wanted_after)s, votes_wanted)
       WHERE id = %(comparison)s
         AND (vote_count < COALESCE(votes_wanted, %(k)s) OR gold = %(true)s)
         AND (CAST(%(quota)s AS integer) IS NULL OR COALESCE((SELECT q.done FROM {progress} q
                                              WHERE q.study_id = %(study)s
                                                AND q.annotator_id = %(annotator_id)s),
                                             (SELECT COUNT(*) FROM {assignment} q
                                              WHERE q.study_id = %(study)s
                                                AND q.status = %(voted)s
                                                AND q.annotator_id = %(annotator_id)s))
                                   < %(quota)s)
       RETURNING vote_count,
                 gold = %(false)s AND vote_count >= COALESCE(votes_wanted, %(k)s) AS filled"""
)
_QUOTA_LOCK_SQL = "SELECT pg_advisory_xact_lock(%(quota_lock)s)"
_VOTE_INSERT_SQL = sql(
    """INSERT INTO {vote} ({columns}) SELECT {values} {{source}}
       ON CONFLICT DO NOTHING RETURNING id""",
    columns=", ".join(connection.ops.quote_name(f.column) for f in _VOTE_FIELDS),
    values=", ".join(f"%({f.attname})s" for f in _VOTE_FIELDS),
)
_VOTED_SQL = sql("UPDATE {assignment} SET status = %(voted)s WHERE id = %(assignment_id)s")
# The voter's own progress when the comparison stays open (a gold check always does): one
# vote more, and the pair closed to them (unless it already was: a late vote on an expired
# lease).
_MINE_SQL = sql(
    """UPDATE {progress} SET done = done + 1, closed = closed + %(newly_closed)s
       WHERE study_id = %(study)s AND annotator_id = %(annotator_id)s"""
)
# PostgreSQL: the steps as one statement (data-modifying WITH; SQLite has none). The insert
# reads the slot's RETURNING, so it runs only when a slot was taken, and the assignment is
# marked only when the vote went in. Returns (slot taken, vote id, filled, done, closed, open).
_VOTE_ONE_STATEMENT_SQL = sql(
    """WITH slot AS ({take_slot}),
            vote AS ({insert}),
            marked AS (UPDATE {assignment} SET status = %(voted)s
                       WHERE id = %(assignment_id)s AND EXISTS (SELECT 1 FROM vote)),
            mine AS ({mine} AND EXISTS (SELECT 1 FROM vote)
                     AND NOT (SELECT filled FROM slot) RETURNING done, closed)
       SELECT EXISTS (SELECT 1 FROM slot), (SELECT id FROM vote), (SELECT filled FROM slot),
              (SELECT done FROM mine), (SELECT closed FROM mine),
              (SELECT open_pairs FROM {study} WHERE id = %(study)s)""",
    take_slot=_TAKE_SLOT_SQL,
    insert=_VOTE_INSERT_SQL.format(source="FROM slot"),
    mine=_MINE_SQL,
)
# SQLite (a SELECT before ON CONFLICT needs a WHERE there): take the slot, insert, mark.
_VOTE_ALONE_SQL = _VOTE_INSERT_SQL.format(source="WHERE 1 = 1")
# The vote filled the comparison: it is closed to nobody any more, because it is not open. A
# statement of its own, after the vote's, so that it sees every skip and expiry on the
# comparison (they take its lock, which this transaction holds now). The progress rows are
# locked in annotator order, then the study row, so that two filling votes never wait on each
# other crosswise (progress_recount takes a row, then the study, too).
_FILLED_SQL = sql(
    """WITH who AS (SELECT p.id FROM {progress} p
                    WHERE p.study_id = %(study)s
                      AND p.annotator_id IN (SELECT g.annotator_id FROM {assignment} g
                                             WHERE g.comparison_id = %(comparison)s
                                               AND g.status <> %(leased)s)
                    ORDER BY p.annotator_id FOR UPDATE OF p),
            upd AS (UPDATE {progress} p
                    SET done = p.done + CASE WHEN p.annotator_id = %(annotator_id)s
                                             THEN 1 ELSE 0 END,
                        closed = p.closed - CASE WHEN p.annotator_id <> %(annotator_id)s
                                                 THEN 1 ELSE %(was_closed)s END
                    FROM who WHERE p.id = who.id
                    RETURNING p.annotator_id, p.done, p.closed),
            shut AS (UPDATE {study} SET open_pairs = open_pairs - 1
                     WHERE id = %(study)s AND (SELECT COUNT(*) FROM upd) >= 0
                     RETURNING open_pairs)
       SELECT (SELECT done FROM upd WHERE annotator_id = %(annotator_id)s),
              (SELECT closed FROM upd WHERE annotator_id = %(annotator_id)s),
              (SELECT open_pairs FROM shut)"""
)
# SQLite serialises writers: a filled comparison sends the study's progress to be counted
# again (rare, and SQLite is the single-user demo).
_FILLED_SQLITE_SQL = sql(
    "UPDATE {study} SET progress_basis = progress_basis + 1, open_pairs = NULL WHERE id = %(study)s"
)


@dataclass(frozen=True)
class _Voter:
    """The annotator as the progress read needs them (the vote has their id only)."""

    pk: int
    is_staff: bool = False


@dataclass(frozen=True)
class VoteCast:
    vote: Vote
    created: bool
    progress: Progress | None  # after the vote (None: it was in already; VoteTarget.progress)
    then: object = None  # what ``then`` returned, in the vote's transaction


def vote_record(*, assignment: Assignment, choice: str, comment: str = "") -> tuple[Vote, bool]:
    """Record the annotator's vote; returns (vote, created).

    The same choice again returns the stored vote (created False) and changes nothing; a
    different one raises VoteConflict. A vote after the lease ran out counts only while the
    comparison is below K. Seconds are measured from the pair's first delivery.
    """
    cast = vote_cast(assignment=assignment, choice=choice, comment=comment)
    return cast.vote, cast.created


def vote_cast(*, assignment: Assignment, choice: str, comment: str = "", then=None) -> VoteCast:
    """``vote_record`` with the voter's progress after it and, when ``then`` is given, what it
    returns when called in the same transaction after the vote (the next pair); a vote that
    was in already (created False) calls it in a transaction of its own."""
    if choice not in CHOICES:
        raise ServiceError(BAD_CHOICE)
    study = assignment.study
    if study.status != Study.Status.OPEN:
        raise ServiceError(STUDY_NOT_OPEN)
    if assignment.status == Assignment.Status.SKIPPED:
        raise VoteConflict(SKIPPED)
    try:
        with transaction.atomic():
            vote, progress = _vote_insert(assignment, choice, comment, k=study.votes_per_comparison)
            after = then(progress) if then is not None else None
        return VoteCast(vote, True, progress, after)
    except _NoSlot:
        pass
    existing = Vote.objects.filter(assignment=assignment).first()
    if existing is not None:
        if choice_of(existing) != choice:
            raise VoteConflict(VOTE_CONFLICT)
        after = None
        if then is not None:
            with transaction.atomic():
                after = then(None)
        return VoteCast(existing, False, None, after)
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
    # that the annotator's next pair is another one rather than this one again (it is full, so
    # not open: their kept progress does not change).
    Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.LEASED).update(
        status=Assignment.Status.EXPIRED
    )
    raise VoteConflict(COMPARISON_FULL)


def _vote_insert(
    assignment: Assignment, choice: str, comment: str, *, k: int
) -> tuple[Vote, Progress]:
    """Call inside a transaction (``_NoSlot`` rolls it back)."""
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
    was_leased = assignment.status == Assignment.Status.LEASED
    adaptive = assignment.study.sampling == Study.Sampling.ADAPTIVE
    found = {
        **{f.attname: f.get_db_prep_save(values[f.attname], connection) for f in _VOTE_FIELDS},
        "comparison": assignment.comparison_id,
        "k": k,
        "voted": Assignment.Status.VOTED.value,
        "leased": Assignment.Status.LEASED.value,
        "true": True,
        "false": False,
        "study": assignment.study.pk,
        "quota": assignment.study.quota,
        # One lock per (study, annotator): 2**32 users per study is far beyond any study.
        "quota_lock": (assignment.study.pk << 32) | (assignment.annotator_id & 0xFFFFFFFF),
        # A live (or run-out but not yet expired) lease was not closed to them; an expired one
        # was, while the comparison was open.
        "newly_closed": 1 if was_leased else 0,
        "was_closed": 0 if was_leased else 1,
        "wanted_after": None,
    }
    # Taking the slot also takes the comparison's row lock (held to the commit), which
    # serialises every vote on the comparison: a second request with the same vote waits for
    # it, then finds the comparison full or conflicts on the vote. Either way nothing is
    # taken: _NoSlot rolls the transaction back, giving the slot back.
    with cursor() as run:
        if connection.vendor == "postgresql" and found["quota"] is not None:
            run.execute(_QUOTA_LOCK_SQL, found)
        if adaptive:  # takes the comparison's lock first, then decides (loop/adaptive.py)
            decided = _adaptive_values(assignment, values, found, k=k)
            if decided is not None:
                values = decided
        if connection.vendor == "postgresql":
            run.execute(_VOTE_ONE_STATEMENT_SQL, found)
            slot, vote_id, filled, done, closed, open_pairs = run.fetchone()
            if not slot or vote_id is None:
                raise _NoSlot
            if filled:
                run.execute(_FILLED_SQL, found)
                done, closed, open_pairs = run.fetchone()
        else:
            run.execute(_TAKE_SLOT_SQL, found)
            row = run.fetchone()
            if row is None:
                raise _NoSlot
            filled = bool(row[1])
            run.execute(_VOTE_ALONE_SQL, found)
            inserted = run.fetchone()
            if inserted is None:
                raise _NoSlot
            vote_id = inserted[0]
            run.execute(_VOTED_SQL, found)
            run.execute(_FILLED_SQLITE_SQL if filled else _MINE_SQL, found)
            done = closed = open_pairs = None
    assignment.status = Assignment.Status.VOTED
    if adaptive:  # the comparisons' caps follow the study's fit (annotation/sampling.py)
        sampling_refresh_soon(study_id=assignment.study.pk)
    if assignment.study.sampling == Study.Sampling.STAGED:  # its stage's weight (loop/staged.py)
        staged_vote_taken(vote_id, assignment, filled=bool(filled))
    if None in (done, closed, open_pairs):
        # SQLite, or a kept row that is missing or out of date: read (or count) it now.
        progress = annotator_progress(
            study_id=assignment.study.pk, annotator=_Voter(assignment.annotator_id)
        )
    else:
        progress = progress_of(
            done=done, closed=closed, open_pairs=open_pairs, quota=assignment.study.quota
        )
    return stored(Vote, {"id": vote_id, **values}), progress


def _adaptive_values(assignment: Assignment, values: dict, found: dict, *, k: int) -> dict | None:
    """An adaptive study's decision for this vote (None: a gold check, or not adaptive now):
    the vote's values with its cap and chances, ``found`` given the target it leaves."""
    decided = adaptive_decision(
        comparison_id=assignment.comparison_id, outcome=values["outcome"], k=k
    )
    if decided is None:
        return None
    extra = {"cap": decided.cap, "asked": decided.asked, "next_asked": decided.next_asked}
    for name, value in extra.items():
        found[name] = value
    found["wanted_after"] = decided.wanted
    return {**values, **extra}


def choice_of(vote: Vote) -> str:
    """The choice a vote was cast with (as the API takes and returns it)."""
    if vote.shown == "tie" and vote.tie_kind == Vote.TieKind.BOTH_BAD:
        return "tie_bothbad"
    return vote.shown
