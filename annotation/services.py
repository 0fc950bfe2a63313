"""Writes for the annotation app: studies, identity flags, assignment of pairs, votes.

Assignment is the part that must hold under load: a comparison row is the lock that guards its
slots (its votes and live leases), taken with ``SELECT … FOR UPDATE SKIP LOCKED`` where the
database has it, and every count that decides a slot is read again after the lock is held.
"""

from __future__ import annotations

import itertools
import random
import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from generation.models import Answer, GenerationRun, PromptSet
from generation.services import ServiceError

from . import identity, selectors
from .models import Assignment, Comparison, IdentityFlag, Study, StudyRun, Vote

STUDY_NAME_TAKEN = "a study named {name!r} already exists"
TOO_FEW_MODELS = "a study needs succeeded runs of at least two different models"
RUN_NOT_FOUND = "no generation run with id {ids}"
RUN_NOT_SUCCEEDED = "run {id} is {status}; only succeeded runs can be compared"
MIXED_PROMPT_SETS = (
    "the runs answer different prompt sets ({names}); a study compares runs of one prompt set"
)
WRONG_PROMPT_SET = "run {id} answers prompt set {actual!r}, not {expected!r}"
SAME_MODEL_TWICE = "runs {ids} are both of model {model!r}; a study takes one run per model"
NO_COMMON_QUESTIONS = "the runs have no answered question in common; nothing to compare"
BAD_VOTES_PER_COMPARISON = "votes per comparison must be at least 1"
CANNOT_OPEN = "study {name!r} is {status}; only a draft or closed study can be opened"
CANNOT_CLOSE = "study {name!r} is {status}; only an open study can be closed"
STUDY_NOT_OPEN = "this study is not open"
VOTE_CONFLICT = "this pair already has a different vote from you; votes are never overwritten"
COMPARISON_FULL = "this pair has all the votes it needs (your time on it ran out); thank you"
BAD_CHOICE = 'choice must be one of "left", "tie", "right"'
TEXT_NAMES_MODEL = "the {field} names a model ({term!r}); annotators see it, so leave it out"

CHOICES = ("left", "tie", "right")
_OUTCOME = {
    # (shown, side on the left) -> canonical outcome
    ("left", "a"): Vote.Outcome.A,
    ("left", "b"): Vote.Outcome.B,
    ("right", "a"): Vote.Outcome.B,
    ("right", "b"): Vote.Outcome.A,
    ("tie", "a"): Vote.Outcome.TIE,
    ("tie", "b"): Vote.Outcome.TIE,
}

_random = random.SystemRandom()


class VoteConflict(ServiceError):
    """The vote cannot be taken as asked (HTTP 409)."""


# --- studies -----------------------------------------------------------------------------------


@transaction.atomic
def study_create(
    *,
    name: str,
    runs: Sequence[GenerationRun | int],
    prompt_set: PromptSet | None = None,
    votes_per_comparison: int = 3,
    instructions: str = "",
    title: str = "",
    open_now: bool = False,
    user=None,
) -> Study:
    """A study with every comparison (model pairs x questions) built in this one transaction."""
    run_ids = [r.pk if isinstance(r, GenerationRun) else int(r) for r in runs]
    found = {
        r.pk: r
        for r in GenerationRun.objects.select_related("model", "prompt_set").filter(pk__in=run_ids)
    }
    missing = [str(i) for i in run_ids if i not in found]
    if missing:
        raise ServiceError(RUN_NOT_FOUND.format(ids=", ".join(missing)))
    chosen = [found[i] for i in dict.fromkeys(run_ids)]  # ordered, without repeats
    study_runs_check(runs=chosen, prompt_set=prompt_set)
    if votes_per_comparison < 1:
        raise ServiceError(BAD_VOTES_PER_COMPARISON)
    if Study.objects.filter(name=name).exists():
        raise ServiceError(STUDY_NAME_TAKEN.format(name=name))

    study_texts_check(
        models=[r.model for r in chosen], texts={"title": title, "instructions": instructions}
    )
    chosen.sort(key=lambda r: r.pk)
    try:
        with transaction.atomic():
            study = Study.objects.create(
                name=name,
                title=title,
                prompt_set=chosen[0].prompt_set,
                votes_per_comparison=votes_per_comparison,
                instructions=instructions,
                created_by=user if getattr(user, "pk", None) else None,
            )
    except IntegrityError:
        raise ServiceError(STUDY_NAME_TAKEN.format(name=name)) from None
    StudyRun.objects.bulk_create(StudyRun(study=study, run=r, model=r.model) for r in chosen)

    answers: dict[int, dict[int, int]] = defaultdict(dict)  # run -> question -> answer
    for answer_id, run_id, question_id in Answer.objects.filter(run__in=chosen).values_list(
        "pk", "run_id", "question_id"
    ):
        answers[run_id][question_id] = answer_id
    comparisons = []
    for question_id in study.prompt_set.questions.order_by("position").values_list("pk", flat=True):
        for run_a, run_b in itertools.combinations(chosen, 2):
            a, b = answers[run_a.pk].get(question_id), answers[run_b.pk].get(question_id)
            if a is not None and b is not None:
                comparisons.append(
                    Comparison(
                        study=study,
                        question_id=question_id,
                        run_a=run_a,
                        run_b=run_b,
                        answer_a_id=a,
                        answer_b_id=b,
                    )
                )
    if not comparisons:
        raise ServiceError(NO_COMMON_QUESTIONS)
    Comparison.objects.bulk_create(comparisons, batch_size=500)
    if open_now:
        study = study_open(study=study)
    return study


def study_runs_check(*, runs: Sequence[GenerationRun], prompt_set: PromptSet | None = None) -> None:
    """Raise ServiceError unless these runs can make a study (admin actions ask before a form)."""
    for run in runs:
        if run.status != GenerationRun.Status.SUCCEEDED:
            raise ServiceError(RUN_NOT_SUCCEEDED.format(id=run.pk, status=run.status))
    sets = {r.prompt_set.name for r in runs}
    if len(sets) > 1:
        raise ServiceError(MIXED_PROMPT_SETS.format(names=", ".join(sorted(sets))))
    if prompt_set is not None:
        for run in runs:
            if run.prompt_set_id != prompt_set.pk:
                raise ServiceError(
                    WRONG_PROMPT_SET.format(
                        id=run.pk, actual=run.prompt_set.name, expected=prompt_set.name
                    )
                )
    by_model: dict[int, list[GenerationRun]] = defaultdict(list)
    for run in runs:
        by_model[run.model_id].append(run)
    for same in by_model.values():
        if len(same) > 1:
            raise ServiceError(
                SAME_MODEL_TWICE.format(
                    ids=", ".join(str(r.pk) for r in same), model=same[0].model.name
                )
            )
    if len(by_model) < 2:
        raise ServiceError(TOO_FEW_MODELS)


def study_texts_check(*, models, texts: dict[str, str]) -> None:
    """Refuse annotator-facing study text (title, instructions) that names a study model."""
    terms = identity.identity_terms(
        names=[n for m in models for n in (m.name, m.name_or_path) if n],
        makers=[m.maker for m in models if m.maker],
        words=[],
    )
    for field, text in texts.items():
        for span in identity.find_identity_spans(text or "", terms):
            if span.kind in (identity.NAME, identity.MAKER):
                raise ServiceError(TEXT_NAMES_MODEL.format(field=field, term=span.text))


@transaction.atomic
def study_open(*, study: Study) -> Study:
    """Open a draft or closed study, flagging answers that may name their model first."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status == Study.Status.OPEN:
        raise ServiceError(CANNOT_OPEN.format(name=study.name, status=study.status))
    study_flag_identity(study=study)
    study.status = Study.Status.OPEN
    study.opened_at = study.opened_at or timezone.now()
    study.closed_at = None
    study.save(update_fields=["status", "opened_at", "closed_at"])
    return study


@transaction.atomic
def study_close(*, study: Study) -> Study:
    """Stop handing out pairs; votes already in hand are refused from now on."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.OPEN:
        raise ServiceError(CANNOT_CLOSE.format(name=study.name, status=study.status))
    study.status = Study.Status.CLOSED
    study.closed_at = timezone.now()
    study.save(update_fields=["status", "closed_at"])
    return study


@transaction.atomic
def study_flag_identity(*, study: Study) -> list[IdentityFlag]:
    """(Re)scan the study's answers for self-identifying spans; existing flags keep their mask.

    Looks for every study model's name, path and maker (in every answer: an answer naming
    *another* model unblinds as well) and ``settings.IDENTITY_WORDS``, plus self-introductions.
    """
    study_runs = StudyRun.objects.filter(study=study).select_related("model")
    terms = identity.identity_terms(
        names=[n for sr in study_runs for n in (sr.model.name, sr.model.name_or_path) if n],
        makers=[sr.model.maker for sr in study_runs if sr.model.maker],
        words=settings.IDENTITY_WORDS,
    )
    existing = {(f.answer_id, f.start, f.end): f for f in IdentityFlag.objects.filter(study=study)}
    seen = set()
    new = []
    for answer in Answer.objects.filter(run__in=[sr.run_id for sr in study_runs]).only(
        "pk", "text"
    ):
        for span in identity.find_identity_spans(answer.text, terms):
            key = (answer.pk, span.start, span.end)
            seen.add(key)
            if key not in existing:
                new.append(
                    IdentityFlag(
                        study=study,
                        answer=answer,
                        start=span.start,
                        end=span.end,
                        text=span.text[:500],
                        kind=span.kind,
                    )
                )
    IdentityFlag.objects.bulk_create(new, batch_size=500)
    # Spans no longer found (the word list changed) go; masked ones stay, they were a decision.
    stale = [f.pk for key, f in existing.items() if key not in seen and not f.masked]
    IdentityFlag.objects.filter(pk__in=stale).delete()
    return list(IdentityFlag.objects.filter(study=study))


def identity_flags_mask(*, flags, masked: bool = True) -> int:
    """Mask (or unmask) flagged spans for annotators; returns how many changed."""
    return (
        IdentityFlag.objects.filter(pk__in=[f.pk for f in flags])
        .exclude(masked=masked)
        .update(masked=masked)
    )


# --- assignment --------------------------------------------------------------------------------


def _lock(comparison_id: int) -> int:
    """Lock the comparison row for this transaction (waiting for it); returns its vote count.

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
        .values_list("vote_count", flat=True)
        .get()
    )


def assignment_next(*, study: Study, annotator) -> Assignment | None:
    """The pair this annotator should judge next in an open study, or None when none is left."""
    return assignment_next_with_progress(study=study, annotator=annotator)[0]


# Under the comparison's lock: count its live leases again (the claim counted them in an older
# snapshot), insert the lease only if votes + live leases are still below K, and put answer a on
# the side it was shown on less often among the comparison's votes and live leases (the coin
# decides a tie, so across a model pair it evens out too). ON CONFLICT DO NOTHING: when the
# same annotator's other request has just taken a lease in this study (the one lease per study
# constraint) no row comes back; a plain INSERT would abort the transaction.
_LEASE_INSERT_SQL = selectors.sql(
    """INSERT INTO {assignment} (study_id, comparison_id, annotator_id, token, {left}, status,
                                 first_delivered_at, lease_expires_at)
       SELECT %(study)s, c.id, %(annotator)s, %(token)s,
              CASE WHEN n.a_left < n.b_left THEN %(a)s
                   WHEN n.b_left < n.a_left THEN %(b)s ELSE %(coin)s END,
              %(leased)s, %(now)s, %(until)s
       FROM {comparison} c, (
           SELECT COALESCE(SUM(CASE WHEN {live} THEN 1 ELSE 0 END), 0) AS live,
                  COALESCE(SUM(CASE WHEN {left} = %(a)s AND (status = %(voted)s OR {live})
                                    THEN 1 ELSE 0 END), 0) AS a_left,
                  COALESCE(SUM(CASE WHEN {left} = %(b)s AND (status = %(voted)s OR {live})
                                    THEN 1 ELSE 0 END), 0) AS b_left
           FROM {assignment} WHERE comparison_id = %(comparison)s) n
       WHERE c.id = %(comparison)s AND c.vote_count + n.live < %(k)s
       ON CONFLICT DO NOTHING
       RETURNING id, {left}""",
    live=selectors.LIVE_LEASE,
)


def _lease_insert(
    *, study_id: int, k: int, comparison_id: int, annotator, now: datetime
) -> Assignment | None:
    """A new lease on this (locked) comparison, or None when it is full or the annotator's
    other request won (the caller tells which)."""
    until = now + settings.ASSIGNMENT_LEASE
    token = secrets.token_urlsafe(16)
    adapt = connection.ops.adapt_datetimefield_value
    params = {
        "study": study_id,
        "comparison": comparison_id,
        "annotator": annotator.pk,
        "token": token,
        "k": k,
        "a": Assignment.Side.A.value,
        "b": Assignment.Side.B.value,
        "coin": _random.choice([Assignment.Side.A, Assignment.Side.B]).value,
        "leased": Assignment.Status.LEASED.value,
        "voted": Assignment.Status.VOTED.value,
        "now": adapt(now),
        "until": adapt(until),
    }
    with connection.cursor() as cursor:
        cursor.execute(_LEASE_INSERT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return selectors.stored(
        Assignment(
            pk=row[0],
            study_id=study_id,
            comparison_id=comparison_id,
            annotator=annotator,
            token=token,
            left=row[1],
            status=Assignment.Status.LEASED,
            first_delivered_at=now,
            lease_expires_at=until,
        )
    )


class NextPair(NamedTuple):
    assignment: Assignment | None
    progress: selectors.Progress
    texts: selectors.PairTexts | None = None  # read with a new claim; else shown_pair reads them


@transaction.atomic
def assignment_next_with_progress(
    *, study: Study | int, annotator, state: selectors.LoopState | None = None
) -> NextPair:
    """The pair this annotator should judge next (or None), and their progress with it.

    Their own unvoted pair comes back again (a reload never takes a second slot; an expired
    lease is renewed if the comparison still has room). Otherwise: a comparison they have never
    been given, among those with the fewest votes + live leases, at random among ties.
    ``state``: the annotator's ``selectors.loop_state`` in this study, if the caller has just
    read it (the API reads it for the permission check); otherwise it is read here.
    """
    study_id = study.pk if isinstance(study, Study) else int(study)
    if state is None:
        # Read afresh: the status or K may have changed since the caller loaded the study.
        state = selectors.loop_state(study_id=study_id, annotator=annotator)
    if not state.open:
        raise ServiceError(STUDY_NOT_OPEN)
    now = state.now
    k = state.votes_per_comparison

    def progress() -> selectors.Progress:
        return selectors.annotator_progress(
            study=Study(pk=study_id, votes_per_comparison=k), annotator=annotator, now=now
        )

    if state.held_id is not None:
        held = Assignment.objects.get(pk=state.held_id)
        if state.held_live:
            return NextPair(held, state.progress)
        votes = _lock(held.comparison_id)
        others = selectors.live_leases_of_others(
            comparison_id=held.comparison_id, annotator=annotator, now=now
        )
        held.refresh_from_db()
        if held.status == Assignment.Status.LEASED:
            if votes + others < k:
                held.lease_expires_at = now + settings.ASSIGNMENT_LEASE
                held.save(update_fields=["lease_expires_at"])
                return NextPair(held, progress())
            held.status = Assignment.Status.EXPIRED
            held.save(update_fields=["status"])
        current = progress()
    else:
        # Taking a new pair does not change the progress: it was counted as still available.
        current = state.progress

    full: list[int] = []
    while (
        claimed := selectors.claim_candidate(
            study_id=study_id, k=k, annotator=annotator, now=now, skip=full
        )
    ) is not None:
        comparison_id, texts = claimed
        created = _lease_insert(
            study_id=study_id, k=k, comparison_id=comparison_id, annotator=annotator, now=now
        )
        if created is not None:
            return NextPair(created, current, texts)
        # The same annotator asked twice at once and the other request won: use its pair.
        mine = Assignment.objects.filter(
            study_id=study_id, annotator=annotator, status=Assignment.Status.LEASED
        ).first()
        if mine is not None:
            return NextPair(mine, progress())
        full.append(comparison_id)  # filled up since the claim's snapshot
    return NextPair(None, current)


# --- votes -------------------------------------------------------------------------------------


class _NoSlot(Exception):
    """The vote was not taken (the comparison is full, or the assignment has a vote already):
    raised inside the transaction so that it rolls back."""


_TAKE_SLOT_SQL = selectors.sql(
    """UPDATE {comparison} SET vote_count = vote_count + 1
       WHERE id = %(comparison)s AND vote_count < %(k)s
       RETURNING vote_count"""
)
_VOTE_COLUMNS = (
    "comparison_id",
    "assignment_id",
    "annotator_id",
    "outcome",
    "shown",
    "seconds",
    "comment",
    "imported",
    "judge",
    "created_at",
)
_VOTE_INSERT_SQL = selectors.sql(
    """INSERT INTO {vote} ({columns}) VALUES ({values})
       ON CONFLICT DO NOTHING RETURNING id""",
    columns=", ".join(_VOTE_COLUMNS),
    values=", ".join(f"%({c})s" for c in _VOTE_COLUMNS),
)
_VOTED_SQL = selectors.sql(
    "UPDATE {assignment} SET status = %(voted)s WHERE id = %(assignment_id)s"
)
# The same three steps as one PostgreSQL statement (data-modifying WITH; SQLite has none): the
# insert reads the slot's RETURNING, so it runs only when a slot was taken, and the assignment
# is marked only when the vote went in. Returns (slot taken, vote id).
_VOTE_ONE_STATEMENT_SQL = selectors.sql(
    """WITH slot AS ({take_slot}),
            vote AS (INSERT INTO {vote} ({columns}) SELECT {values} FROM slot
                     ON CONFLICT DO NOTHING RETURNING id),
            marked AS (UPDATE {assignment} SET status = %(voted)s
                       WHERE id = %(assignment_id)s AND EXISTS (SELECT 1 FROM vote))
       SELECT EXISTS (SELECT 1 FROM slot), (SELECT id FROM vote)""",
    take_slot=_TAKE_SLOT_SQL,
    columns=", ".join(_VOTE_COLUMNS),
    values=", ".join(f"%({c})s" for c in _VOTE_COLUMNS),
)


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
    try:
        return _vote_insert(assignment, choice, comment, k=study.votes_per_comparison), True
    except _NoSlot:
        pass
    existing = Vote.objects.filter(assignment=assignment).first()
    if existing is not None:
        if existing.shown != choice:
            raise VoteConflict(VOTE_CONFLICT)
        return existing, False
    # Live or late, no comparison ever gets more than K votes.
    raise VoteConflict(COMPARISON_FULL)


@transaction.atomic
def _vote_insert(assignment: Assignment, choice: str, comment: str, *, k: int) -> Vote:
    now = timezone.now()
    values = {
        "comparison_id": assignment.comparison_id,
        "assignment_id": assignment.pk,
        "annotator_id": assignment.annotator_id,
        "outcome": _OUTCOME[(choice, assignment.left)],
        "shown": choice,
        "seconds": max(0.0, (now - assignment.first_delivered_at).total_seconds()),
        "comment": comment.strip(),
        "imported": False,
        "judge": "",
    }
    params = {
        **values,
        "created_at": connection.ops.adapt_datetimefield_value(now),
        "comparison": assignment.comparison_id,
        "k": k,
        "voted": Assignment.Status.VOTED.value,
    }
    # Taking the slot also takes the comparison's row lock (held to the commit), which
    # serialises every vote on the comparison: a second request with the same vote waits for
    # it, then finds the comparison full or conflicts on the vote. Either way nothing is
    # taken: _NoSlot rolls the transaction back, giving the slot back.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_VOTE_ONE_STATEMENT_SQL, params)
            slot, vote_id = cursor.fetchone()
            if not slot or vote_id is None:
                raise _NoSlot
        else:
            cursor.execute(_TAKE_SLOT_SQL, params)
            if cursor.fetchone() is None:
                raise _NoSlot
            cursor.execute(_VOTE_INSERT_SQL, params)
            row = cursor.fetchone()
            if row is None:
                raise _NoSlot
            vote_id = row[0]
            cursor.execute(_VOTED_SQL, params)
    assignment.status = Assignment.Status.VOTED
    return selectors.stored(Vote(pk=vote_id, created_at=now, **values))
