"""The next pair: claim a comparison, take a lease on it, and what the annotator is shown.

Assignment is the part that must hold under load: a comparison row is the lock that guards its
slots (its votes and live leases), taken with ``SELECT … FOR UPDATE SKIP LOCKED`` where the
database has it, and every count that decides a slot is read again after the lock is held.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction

from evalsite.errors import ServiceError
from generation.models import Answer

from ..identity import apply_masks
from ..models import Assignment, Comparison, IdentityFlag, Study
from ..sampling import sampling_refresh_soon
from .progress import progress_lease_expired
from .sql import LIVE_LEASE, NOBODY, fetchone, live_leases, params, sql, stored, target
from .state import STUDY_NOT_OPEN, LoopState, Progress, annotator_progress

_random = random.SystemRandom()

# What an annotator is shown of a comparison (``pair``: its row), whether a span of either
# answer is masked for the study, and what finds the earlier turns of a multi-turn question
# (its later user turns, the question and the two runs; the answers are to the last turn).
_PAIR_COLUMNS = sql(
    """q.text, pair.answer_a_id, a.text, pair.answer_b_id, b.text,
       EXISTS (SELECT 1 FROM {flag} f WHERE f.study_id = pair.study_id AND f.masked = %(true)s
               AND f.answer_id IN (pair.answer_a_id, pair.answer_b_id)),
       q.follow_ups, pair.question_id, a.run_id, b.run_id"""
)
_PAIR_JOINS = sql(
    """JOIN {question} q ON q.id = pair.question_id
       JOIN {answer} a ON a.id = pair.answer_a_id
       JOIN {answer} b ON b.id = pair.answer_b_id"""
)
# The claim: among the comparisons the annotator was never given whose load is below their
# target (``sql.target``: K, or what routing left them; 0 is never handed out), take
# the ``window`` first in (tier, key) order (a bounded top-N sort; a sort under the row locks
# could not be bounded and would sort them all), then lock the first of those that no other
# transaction holds. It returns the pair's texts with it (one round trip less), read in the
# outer query, so only for the one row claimed. ``pick`` (_PICK) sets tier and key: uniform,
# the load and a random number (fewest votes first, at random among ties); active sampling,
# unvoted comparisons first (tier 0, at random), then the rest in one tier, each drawn with
# probability weight / sum of weights by the key -ln(1 - U) / weight (the smallest of these
# exponential keys falls on a comparison with exactly that probability: Efraimidis and
# Spirakis). The same statement computes that probability and how many comparisons it was
# among (window sums over the eligible rows), so the lease can record them.
_CANDIDATE_SQL = sql(
    """SELECT pair.id, pair.p, pair.n, {columns}
       FROM (SELECT c.id, c.study_id, c.question_id, c.answer_a_id, c.answer_b_id, cand.p, cand.n
             FROM {comparison} c
             JOIN (SELECT c2.id, {{pick}}
                   FROM {comparison} c2
                   LEFT JOIN ({live}) live ON live.comparison_id = c2.id
                   WHERE c2.study_id = %(study)s AND c2.gold = %(gold)s
                     AND (c2.gold = %(true)s
                          OR c2.vote_count + COALESCE(live.n, 0) < {target})
                     AND NOT EXISTS (SELECT 1 FROM {assignment} mine
                                     WHERE mine.comparison_id = c2.id
                                       AND mine.annotator_id = %(annotator)s)
                     {{skip}}
                   ORDER BY tier, r
                   LIMIT %(window)s) cand ON cand.id = c.id
             ORDER BY cand.tier, cand.r
             LIMIT 1
             {{lock}}) pair
       {joins}""",
    live=live_leases("%(study)s"),
    target=target("c2", "%(k)s"),
    columns=_PAIR_COLUMNS,
    joins=_PAIR_JOINS,
)
_LOAD = "c2.vote_count + COALESCE(live.n, 0)"
_RANDOM = "RAND()" if connection.vendor == "sqlite" else "RANDOM()"  # [0, 1) (Django's, SQLite)
_PICK = {
    "uniform": f"{_LOAD} AS tier, RANDOM() AS r, NULL AS p, NULL AS n",
    "active": f"""CASE WHEN {_LOAD} = 0 THEN 0 ELSE 1 END AS tier,
                  CASE WHEN {_LOAD} = 0 THEN {_RANDOM}
                       ELSE -LN(1 - {_RANDOM}) / c2.sampling_weight END AS r,
                  CASE WHEN {_LOAD} = 0
                       THEN 1.0 / COUNT(CASE WHEN {_LOAD} = 0 THEN 1 END) OVER ()
                       ELSE c2.sampling_weight
                            / SUM(CASE WHEN {_LOAD} > 0 THEN c2.sampling_weight END) OVER ()
                  END AS p,
                  CASE WHEN {_LOAD} = 0 THEN COUNT(CASE WHEN {_LOAD} = 0 THEN 1 END) OVER ()
                       ELSE COUNT(CASE WHEN {_LOAD} > 0 THEN 1 END) OVER () END AS n""",
}
# More than the transactions that can hold a comparison's lock at once (one per web worker
# thread, claiming or voting); if all of them are held anyway, the claim is asked again over
# every candidate (ALL_CANDIDATES) before anyone is told nothing is left.
CLAIM_WINDOW = 64
ALL_CANDIDATES = 2**31 - 1
_PAIR_SQL = sql(
    "SELECT {columns} FROM {comparison} pair {joins} WHERE pair.id = %(comparison)s",
    columns=_PAIR_COLUMNS,
    joins=_PAIR_JOINS,
)
# Under the comparison's lock: count its live leases again (the claim counted them in an older
# snapshot), insert the lease only if votes + live leases are still below K, and put answer a on
# the side it was shown on less often among the comparison's votes and live leases (the coin
# decides a tie, so across a model pair it evens out too). ON CONFLICT DO NOTHING: when the
# same annotator's other request has just taken a lease in this study (the one lease per study
# constraint) no row comes back; a plain INSERT would abort the transaction.
_LEASE_INSERT_SQL = sql(
    """INSERT INTO {assignment} (study_id, comparison_id, annotator_id, token, {left}, status,
                                 first_delivered_at, lease_expires_at, sampling_probability,
                                 sampling_eligible)
       SELECT %(study)s, c.id, %(annotator)s, %(token)s,
              CASE WHEN n.a_left < n.b_left THEN %(a)s
                   WHEN n.b_left < n.a_left THEN %(b)s ELSE %(coin)s END,
              %(leased)s, %(now)s, %(until)s, %(probability)s, %(eligible)s
       FROM {comparison} c, (
           SELECT COALESCE(SUM(CASE WHEN {live} THEN 1 ELSE 0 END), 0) AS live,
                  COALESCE(SUM(CASE WHEN {left} = %(a)s AND (status = %(voted)s OR {live})
                                    THEN 1 ELSE 0 END), 0) AS a_left,
                  COALESCE(SUM(CASE WHEN {left} = %(b)s AND (status = %(voted)s OR {live})
                                    THEN 1 ELSE 0 END), 0) AS b_left
           FROM {assignment} WHERE comparison_id = %(comparison)s) n
       WHERE c.id = %(comparison)s AND (c.gold = %(true)s OR c.vote_count + n.live < {target})
       ON CONFLICT DO NOTHING
       RETURNING id, {left}""",
    live=LIVE_LEASE,
    target=target("c", "%(k)s"),
)


@dataclass(frozen=True)
class PairTexts:
    """A comparison's question and answers (to its last user turn) as stored (masks not
    applied yet)."""

    question: str  # the first user turn
    answer_a_id: int
    answer_a: str
    answer_b_id: int
    answer_b: str
    masked: bool  # some span of either answer is masked in this study
    follow_ups: tuple[str, ...] = ()  # the later user turns, when there are any
    question_id: int | None = None
    run_a_id: int | None = None
    run_b_id: int | None = None

    @classmethod
    def of_row(cls, row: Sequence) -> PairTexts:
        follow_ups = row[6]
        if isinstance(follow_ups, str):  # JSON arrives as text through a raw cursor
            follow_ups = json.loads(follow_ups)
        return cls(
            *row[:5],
            masked=bool(row[5]),
            follow_ups=tuple(follow_ups or ()),
            question_id=row[7],
            run_a_id=row[8],
            run_b_id=row[9],
        )

    @property
    def turns(self) -> tuple[str, ...]:
        return (self.question, *self.follow_ups)


class Claimed(NamedTuple):
    comparison_id: int
    texts: PairTexts
    probability: float | None  # active sampling: the chance this pick had ...
    eligible: int | None  # ... among this many comparisons


def _claim(*, state: LoopState, skip: Sequence[int] = (), gold: bool = False) -> Claimed | None:
    """Lock and return a comparison this annotator was never given, among those with the
    fewest votes + live leases (below K), at random among ties, with its texts; None when
    there is none. ``gold``: a gold check instead (they have no K). In an active-sampling
    study, once every comparison has a vote, the pick is weighted (``_PICK``).

    Rows another transaction has locked are skipped (``FOR UPDATE OF c SKIP LOCKED``) where the
    database has row locks; SQLite runs the project with IMMEDIATE transactions, which
    serialise claims anyway. The leases were counted in the statement's snapshot, so whoever
    takes a slot counts again under the lock (``_LEASE_INSERT_SQL``).
    """
    features = connection.features
    lock = ""
    if features.has_select_for_update_skip_locked and features.has_select_for_update_of:
        lock = "FOR UPDATE OF c SKIP LOCKED"
    skipped = {f"skip{i}": pk for i, pk in enumerate(skip)}
    active = state.sampling == Study.Sampling.ACTIVE and not gold
    statement = _CANDIDATE_SQL.format(
        skip=f"AND c2.id NOT IN ({', '.join(f'%({k})s' for k in skipped)})" if skipped else "",
        lock=lock,
        pick=_PICK["active" if active else "uniform"],
    )
    found = params(
        study_id=state.study_id,
        annotator=state.annotator,
        now=state.now,
        k=state.votes_per_comparison,
        excluded=NOBODY,
        true=True,
        window=CLAIM_WINDOW,
        gold=gold,
        **skipped,
    )
    row = fetchone(statement, found)
    if row is None and lock:
        row = fetchone(statement, {**found, "window": ALL_CANDIDATES})
    if row is None:
        return None
    probability = float(row[1]) if row[1] is not None else None
    return Claimed(row[0], PairTexts.of_row(row[3:]), probability, row[2])


def _lease_insert(
    *,
    state: LoopState,
    comparison_id: int,
    probability: float | None = None,
    eligible: int | None = None,
) -> Assignment | None:
    """A new lease on this (locked) comparison, or None when it is full or the annotator's
    other request won (the caller tells which). ``probability`` / ``eligible``: how the claim
    picked it, under active sampling."""
    now = state.now
    until = now + settings.ASSIGNMENT_LEASE
    token = secrets.token_urlsafe(16)
    found = params(
        study_id=state.study_id,
        annotator=state.annotator,
        now=now,
        comparison=comparison_id,
        token=token,
        k=state.votes_per_comparison,
        a=Assignment.Side.A.value,
        b=Assignment.Side.B.value,
        coin=_random.choice([Assignment.Side.A, Assignment.Side.B]).value,
        until=connection.ops.adapt_datetimefield_value(until),
        probability=probability,
        eligible=eligible,
    )
    row = fetchone(_LEASE_INSERT_SQL, found)
    if row is None:
        return None
    pk, left = row
    return stored(
        Assignment,
        {
            "id": pk,
            "study_id": state.study_id,
            "comparison_id": comparison_id,
            "annotator_id": state.annotator.pk,
            "token": token,
            "left": left,
            "status": Assignment.Status.LEASED,
            "first_delivered_at": now,
            "lease_expires_at": until,
            "sampling_probability": probability,
            "sampling_eligible": eligible,
        },
    )


def _lock(comparison_id: int) -> tuple[int, bool, int | None]:
    """Lock the comparison row for this transaction (waiting for it); returns its vote count,
    whether it is a gold check, and its own target (``votes_wanted``; None: the study's K).

    The row lock guards the comparison's slots: votes, live leases and the assignments' status
    change only while it is held. SQLite has no row locks; the project runs it with IMMEDIATE
    transactions, which take the database write lock at BEGIN, so writers are serialised there.
    of=("self",) and no ordering: the default ordering joins the study and question rows, and
    FOR UPDATE would lock those too, so every claim in a study would wait for every other one.
    """
    return (
        Comparison.objects.select_for_update(of=("self",))
        .filter(pk=comparison_id)
        .order_by()
        .values_list("vote_count", "gold", "votes_wanted")
        .get()
    )


class NextPair(NamedTuple):
    assignment: Assignment | None
    progress: Progress
    texts: PairTexts | None = None  # read with a new claim; else shown_pair reads them


@transaction.atomic
def next_pair(*, state: LoopState) -> NextPair:
    """The pair this annotator should judge next (or None), and their progress with it, in a
    transaction of its own (see ``next_pair_here``)."""
    return next_pair_here(state=state)


def next_pair_here(*, state: LoopState) -> NextPair:
    """The pair this annotator should judge next (or None), and their progress with it; call
    inside a transaction (a vote's, so that the vote and the claim commit together).

    Their own unvoted pair comes back again (a reload never takes a second slot; an expired
    lease is renewed if the comparison still has room). Otherwise: a comparison they have never
    been given, among those with the fewest votes + live leases, at random among ties.
    ``state``: the annotator's ``loop_state`` in this study, read just before (the API reads it
    with the permission check, outside this transaction).
    """
    if not state.open:
        raise ServiceError(STUDY_NOT_OPEN)
    now, k, annotator = state.now, state.votes_per_comparison, state.annotator

    def progress() -> Progress:
        return annotator_progress(study_id=state.study_id, annotator=annotator, now=now)

    if state.held_id is not None:
        held = Assignment.objects.get(pk=state.held_id)
        if state.held_live:
            return NextPair(held, state.progress)
        votes, gold, wanted = _lock(held.comparison_id)
        others = (
            Assignment.objects.filter(
                comparison_id=held.comparison_id,
                status=Assignment.Status.LEASED,
                lease_expires_at__gt=now,
            )
            .exclude(annotator=annotator)
            .count()
        )
        held.refresh_from_db()
        if held.status == Assignment.Status.LEASED:
            if gold or votes + others < (k if wanted is None else wanted):
                held.lease_expires_at = now + settings.ASSIGNMENT_LEASE
                held.save(update_fields=["lease_expires_at"])
                return NextPair(held, progress())
            held.status = Assignment.Status.EXPIRED
            held.save(update_fields=["status"])
            progress_lease_expired(
                study_id=state.study_id,
                annotator_id=annotator.pk,
                still_open=gold or votes < (k if wanted is None else wanted),
            )
        current = progress()
    else:
        # Taking a new pair does not change the progress: it was counted as still available.
        current = state.progress

    if state.quota is not None and current.done >= state.quota:
        return NextPair(None, current)
    # Gold checks come at the study's rate while the annotator has some left, and all that are
    # left once the ordinary pairs run out (so their progress counts them like any pair).
    for gold in _gold_order(state.gold_rate):
        found = _claim_lease(state=state, gold=gold, current=current, progress=progress)
        if found is not None:
            return found
    return NextPair(None, current)


def _gold_order(rate: float) -> tuple[bool, ...]:
    return (True, False) if rate > 0 and _random.random() < rate else (False, True)


def _claim_lease(*, state: LoopState, gold: bool, current: Progress, progress) -> NextPair | None:
    full: list[int] = []
    while (claimed := _claim(state=state, skip=full, gold=gold)) is not None:
        comparison_id, texts = claimed.comparison_id, claimed.texts
        created = _lease_insert(
            state=state,
            comparison_id=comparison_id,
            probability=claimed.probability,
            eligible=claimed.eligible,
        )
        if created is not None:
            if claimed.probability is not None:
                sampling_refresh_soon(study_id=state.study_id)
            return NextPair(created, current, texts)
        # The same annotator asked twice at once and the other request won: use its pair.
        mine = Assignment.objects.filter(
            study_id=state.study_id, annotator=state.annotator, status=Assignment.Status.LEASED
        ).first()
        if mine is not None:
            return NextPair(mine, progress())
        full.append(comparison_id)  # filled up since the claim's snapshot
    return None


@dataclass(frozen=True)
class Exchange:
    """One earlier turn of a conversation as shown: the shared user turn and each side's reply."""

    question: str
    left: str
    right: str


@dataclass(frozen=True)
class ShownPair:
    """Exactly what an annotator may see of an assignment (no ids but the token).

    ``question``, ``left`` and ``right`` are the last user turn and the replies to it (the ones
    the comparison is of); ``history`` the turns before it, oldest first (empty for a
    single-turn question)."""

    token: str
    question: str
    left: str
    right: str
    history: tuple[Exchange, ...] = ()


def _masks(study_id: int, answer_ids: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
    spans: dict[int, list[tuple[int, int]]] = {answer_id: [] for answer_id in answer_ids}
    for answer_id, start, end in IdentityFlag.objects.filter(
        study_id=study_id, answer__in=answer_ids, masked=True
    ).values_list("answer_id", "start", "end"):
        spans[answer_id].append((start, end))
    return spans


def shown_pair(*, assignment: Assignment, texts: PairTexts | None = None) -> ShownPair:
    """What the annotator sees of their assignment (``texts``: already read with the claim)."""
    if texts is None:
        texts = PairTexts.of_row(
            fetchone(_PAIR_SQL, {"comparison": assignment.comparison_id, "true": True})
        )
    a_text, b_text = texts.answer_a, texts.answer_b
    if texts.masked:
        a_id, b_id = texts.answer_a_id, texts.answer_b_id
        spans = _masks(assignment.study_id, [a_id, b_id])
        a_text, b_text = apply_masks(a_text, spans[a_id]), apply_masks(b_text, spans[b_id])
    a_left = assignment.left == Assignment.Side.A
    left, right = (a_text, b_text) if a_left else (b_text, a_text)
    return ShownPair(
        token=assignment.token,
        question=texts.turns[-1],
        left=left,
        right=right,
        history=_history(study_id=assignment.study_id, texts=texts, a_left=a_left),
    )


def _history(*, study_id: int, texts: PairTexts, a_left: bool) -> tuple[Exchange, ...]:
    """The earlier turns of a multi-turn comparison, each side's replies masked as its last."""
    turns = texts.turns
    if len(turns) == 1:
        return ()
    replies: dict[tuple[int, int], tuple[int, str]] = {}  # (run, turn) -> (answer, text)
    for answer_id, run_id, turn, text in Answer.objects.filter(
        run_id__in=(texts.run_a_id, texts.run_b_id),
        question_id=texts.question_id,
        turn__lt=len(turns),
    ).values_list("pk", "run_id", "turn", "text"):
        replies[run_id, turn] = (answer_id, text)
    spans = _masks(study_id, [answer_id for answer_id, _ in replies.values()])

    def reply(run_id: int, turn: int) -> str:
        answer_id, text = replies.get((run_id, turn), (None, ""))
        return apply_masks(text, spans[answer_id]) if answer_id is not None else text

    history = []
    for turn, question in enumerate(turns[:-1], start=1):
        a, b = reply(texts.run_a_id, turn), reply(texts.run_b_id, turn)
        left, right = (a, b) if a_left else (b, a)
        history.append(Exchange(question=question, left=left, right=right))
    return tuple(history)
