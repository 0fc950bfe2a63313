"""Reads for the annotation app: who may annotate, loads, progress, what an annotator is shown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from generation.models import Answer, Question

from .identity import apply_masks
from .models import Assignment, Comparison, IdentityFlag, Study, Vote

ANNOTATORS_GROUP = "annotators"
_MEMBERS, _GROUPS = User.groups.through._meta.db_table, Group._meta.db_table
# Who may annotate, as SQL: staff, and members of the annotators group. The annotator API asks it
# within the loop's first statement (see apis.MayAnnotate); the pages ask it alone.
_MAY_ANNOTATE = f"""(%(staff)s OR EXISTS (
    SELECT 1 FROM {_MEMBERS} m JOIN {_GROUPS} g ON g.id = m.group_id
    WHERE m.user_id = %(annotator)s AND g.name = %(group)s))"""


def user_is_annotator(user) -> bool:
    """Annotators (the ``annotators`` group) and staff may judge; nobody else."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    params = {"staff": False, "annotator": user.pk, "group": ANNOTATORS_GROUP}
    return bool(_fetchone(f"SELECT {_MAY_ANNOTATE}", params)[0])


def live_leases(*, now: datetime) -> QuerySet[Assignment]:
    return Assignment.objects.filter(status=Assignment.Status.LEASED, lease_expires_at__gt=now)


# --- the annotator loop ------------------------------------------------------------------------
#
# These reads run on every next-pair and vote request, so each is one hand-written SQL
# statement, portable between PostgreSQL and SQLite. Through the ORM, with loads counted in
# Python, next-pair took 19 statements and about 22 ms in process and a vote 14 statements and
# about 18 ms; now they take 5 and 4 statements (2 of them the session and the user) and about
# 7.5 and 6 ms, against 2.3 ms for the trivial view (bench/annotate_load.py measures the
# throughput). Load = votes (the kept Comparison.vote_count) + live leases; live leases are few
# (an annotator holds at most one per study), so they are grouped once in a derived table.

SQL_NAMES = {
    "study": Study._meta.db_table,
    "comparison": Comparison._meta.db_table,
    "assignment": Assignment._meta.db_table,
    "vote": Vote._meta.db_table,
    "question": Question._meta.db_table,
    "answer": Answer._meta.db_table,
    "flag": IdentityFlag._meta.db_table,
    "left": connection.ops.quote_name("left"),
}


def sql(text: str, **parts: str) -> str:
    """SQL with the table names (and ``parts``) filled in; values stay %(name)s parameters."""
    return text.format(**SQL_NAMES, **parts)


# An assignment row whose lease is live (the SQL twin of ``live_leases``).
LIVE_LEASE = "status = %(leased)s AND lease_expires_at > %(now)s"


def stored(instance):
    """Mark a model instance built from a row this module read or wrote as that stored row."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def _live_leases(study: str) -> str:
    """Live leases per comparison of a study, leaving out the ``excluded`` annotator's."""
    return sql(
        """SELECT comparison_id, COUNT(*) AS n FROM {assignment}
           WHERE study_id = {study_id} AND {live} AND annotator_id <> %(excluded)s
           GROUP BY comparison_id""",
        study_id=study,
        live=LIVE_LEASE,
    )


def _done(study: str) -> str:
    return sql(
        """SELECT COUNT(*) FROM {assignment}
           WHERE study_id = {study_id} AND annotator_id = %(annotator)s AND status = %(voted)s""",
        study_id=study,
    )


def _remaining(study: str, k: str, also: str = "") -> str:
    """Comparisons the annotator holds or was never given whose load, leaving out their own
    lease (``excluded`` = the annotator), is below K."""
    return sql(
        """SELECT COUNT(*) FROM {comparison} c
           LEFT JOIN ({live}) live ON live.comparison_id = c.id
           WHERE c.study_id = {study_id} AND c.vote_count + COALESCE(live.n, 0) < {k} {also}
             AND NOT EXISTS (SELECT 1 FROM {assignment} mine
                             WHERE mine.comparison_id = c.id AND mine.annotator_id = %(annotator)s
                               AND mine.status <> %(leased)s)""",
        live=_live_leases(study),
        study_id=study,
        k=k,
        also=also,
    )


_PROGRESS_SQL = sql(
    "SELECT ({done}), ({remaining})",
    done=_done("%(study)s"),
    remaining=_remaining("%(study)s", "%(k)s"),
)
# Whether the user may annotate, the open study, the lease they hold in it (if any), and their
# progress. One row even when the study is not open, so that the permission is answered first.
_LOOP_STATE_SQL = sql(
    """SELECT {may}, s.votes_per_comparison, held.id, held.lease_expires_at > %(now)s,
              ({done}), ({remaining})
       FROM (SELECT 1 AS one) x
       LEFT JOIN {study} s ON s.id = %(study)s AND s.status = %(open)s
       LEFT JOIN {assignment} held ON held.study_id = s.id AND held.status = %(leased)s
                                   AND held.annotator_id = %(annotator)s""",
    may=_MAY_ANNOTATE,
    done=_done("%(study)s"),
    remaining=_remaining("%(study)s", "s.votes_per_comparison"),
)
# Whether the user may annotate, their own assignment in an open study (anyone else's token is
# unknown), and their progress without it.
_VOTE_TARGET_SQL = sql(
    """SELECT {may}, a.id, a.study_id, a.comparison_id, a.{left}, a.status,
              a.first_delivered_at, a.lease_expires_at, s.votes_per_comparison,
              ({done}), ({remaining})
       FROM (SELECT 1 AS one) x
       LEFT JOIN {assignment} a ON a.token = %(token)s AND a.annotator_id = %(annotator)s
       LEFT JOIN {study} s ON s.id = a.study_id AND s.status = %(open)s""",
    may=_MAY_ANNOTATE,
    done=_done("a.study_id"),
    remaining=_remaining("a.study_id", "s.votes_per_comparison", "AND c.id <> a.comparison_id"),
)
# What an annotator is shown of a comparison (``pair``: its row), and whether a span of either
# answer is masked for the study.
_PAIR_COLUMNS = """q.text, pair.answer_a_id, a.text, pair.answer_b_id, b.text,
       EXISTS (SELECT 1 FROM {flag} f WHERE f.study_id = pair.study_id AND f.masked = %(true)s
               AND f.answer_id IN (pair.answer_a_id, pair.answer_b_id))"""
_PAIR_JOINS = """JOIN {question} q ON q.id = pair.question_id
       JOIN {answer} a ON a.id = pair.answer_a_id
       JOIN {answer} b ON b.id = pair.answer_b_id"""
# The claim: among the comparisons the annotator was never given whose load is below K, take
# the ``window`` first in (load, random) order (a bounded top-N sort; a sort under the row locks
# could not be bounded and would sort them all), then lock the first of those that no other
# transaction holds. It returns the pair's texts with it (one round trip less), read in the
# outer query, so only for the one row claimed.
_CANDIDATE_SQL = sql(
    """SELECT pair.id, {columns}
       FROM (SELECT c.id, c.study_id, c.question_id, c.answer_a_id, c.answer_b_id
             FROM {comparison} c
             JOIN (SELECT c2.id, c2.vote_count + COALESCE(live.n, 0) AS load, RANDOM() AS r
                   FROM {comparison} c2
                   LEFT JOIN ({live}) live ON live.comparison_id = c2.id
                   WHERE c2.study_id = %(study)s AND c2.vote_count + COALESCE(live.n, 0) < %(k)s
                     AND NOT EXISTS (SELECT 1 FROM {assignment} mine
                                     WHERE mine.comparison_id = c2.id
                                       AND mine.annotator_id = %(annotator)s)
                     {{skip}}
                   ORDER BY load, r
                   LIMIT %(window)s) cand ON cand.id = c.id
             ORDER BY cand.load, cand.r
             LIMIT 1
             {{lock}}) pair
       {joins}""",
    live=_live_leases("%(study)s"),
    columns=sql(_PAIR_COLUMNS),
    joins=sql(_PAIR_JOINS),
)
# More than the transactions that can hold a comparison's lock at once (one per web worker
# thread, claiming or voting); if all of them are held anyway, the claim is asked again over
# every candidate (ALL_CANDIDATES) before anyone is told nothing is left.
CLAIM_WINDOW = 64
ALL_CANDIDATES = 2**31 - 1
_PAIR_SQL = sql(
    """SELECT {columns} FROM {comparison} pair {joins} WHERE pair.id = %(comparison)s""",
    columns=sql(_PAIR_COLUMNS),
    joins=sql(_PAIR_JOINS),
)
_NOBODY = 0  # as ``excluded``: user ids start at 1, so no lease is left out


def _fetchone(statement: str, params: dict) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone()


def _params(*, study_id: int, annotator_id: int, now: datetime, **extra) -> dict:
    return {
        "study": study_id,
        "annotator": annotator_id,
        "now": connection.ops.adapt_datetimefield_value(now),
        "leased": Assignment.Status.LEASED.value,
        "voted": Assignment.Status.VOTED.value,
        "excluded": annotator_id,
        "group": ANNOTATORS_GROUP,
        "open": Study.Status.OPEN.value,
        **extra,
    }


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


def annotator_progress(*, study: Study, annotator, now: datetime | None = None) -> Progress:
    """done: their votes in the study; total: done + what can still be given to them."""
    params = _params(
        study_id=study.pk,
        annotator_id=annotator.pk,
        now=now or timezone.now(),
        k=study.votes_per_comparison,
    )
    done, remaining = _fetchone(_PROGRESS_SQL, params)
    return Progress(done=done, total=done + remaining)


@dataclass(frozen=True)
class LoopState:
    """Where an annotator stands in a study, read in one statement at ``now``."""

    now: datetime
    may_annotate: bool
    votes_per_comparison: int | None  # None: the study is not open
    held_id: int | None  # the assignment they hold (status leased), if any
    held_live: bool  # ... and its lease has not run out
    progress: Progress

    @property
    def open(self) -> bool:
        return self.votes_per_comparison is not None


def loop_state(*, study_id: int, annotator, now: datetime | None = None) -> LoopState:
    now = now or timezone.now()
    params = _params(
        study_id=study_id, annotator_id=annotator.pk, now=now, staff=annotator.is_staff
    )
    may, k, held_id, held_live, done, remaining = _fetchone(_LOOP_STATE_SQL, params)
    return LoopState(
        now=now,
        may_annotate=bool(may),
        votes_per_comparison=k,
        held_id=held_id,
        held_live=bool(held_live),
        progress=Progress(done=done, total=done + remaining),
    )


@dataclass(frozen=True)
class PairTexts:
    """A comparison's question and answers as stored (masks not applied yet)."""

    question: str
    answer_a_id: int
    answer_a: str
    answer_b_id: int
    answer_b: str
    masked: bool  # some span of either answer is masked in this study


def claim_candidate(
    *, study_id: int, k: int, annotator, now: datetime, skip: Sequence[int] = ()
) -> tuple[int, PairTexts] | None:
    """Lock and return a comparison this annotator was never given, among those with the
    fewest votes + live leases (below K), at random among ties, with its texts; None when
    there is none.

    Rows another transaction has locked are skipped (``FOR UPDATE OF c SKIP LOCKED``) where the
    database has row locks; SQLite runs the project with IMMEDIATE transactions, which
    serialise claims anyway. The leases were counted in the statement's snapshot, so whoever
    takes a slot counts again under the lock (services._lease_insert).
    """
    features = connection.features
    lock = ""
    if features.has_select_for_update_skip_locked and features.has_select_for_update_of:
        lock = "FOR UPDATE OF c SKIP LOCKED"
    skipped = {f"skip{i}": pk for i, pk in enumerate(skip)}
    statement = _CANDIDATE_SQL.format(
        skip=f"AND c2.id NOT IN ({', '.join(f'%({k})s' for k in skipped)})" if skipped else "",
        lock=lock,
    )
    params = _params(
        study_id=study_id,
        annotator_id=annotator.pk,
        now=now,
        k=k,
        excluded=_NOBODY,
        true=True,
        window=CLAIM_WINDOW,
        **skipped,
    )
    row = _fetchone(statement, params)
    if row is None and lock:
        row = _fetchone(statement, {**params, "window": ALL_CANDIDATES})
    if row is None:
        return None
    return row[0], PairTexts(*row[1:6], masked=bool(row[6]))


def live_leases_of_others(*, comparison_id: int, annotator, now: datetime) -> int:
    return (
        live_leases(now=now)
        .filter(comparison_id=comparison_id)
        .exclude(annotator=annotator)
        .count()
    )


def _aware(value) -> datetime:
    """A datetime from raw SQL: PostgreSQL gives an aware one; SQLite a naive one in UTC (text
    where the column type is not declared)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
        return Progress(done=done, total=done + self.remaining_others)


def vote_target(*, token: str, annotator, now: datetime | None = None) -> VoteTarget:
    params = _params(
        study_id=0,
        annotator_id=annotator.pk,
        now=now or timezone.now(),
        token=token,
        staff=annotator.is_staff,
    )
    may, pk, study_id, comparison_id, left, status, delivered, expires, k, done, remaining = (
        _fetchone(_VOTE_TARGET_SQL, params)
    )
    assignment = None
    if pk is not None and k is not None:
        assignment = stored(
            Assignment(
                pk=pk,
                study=Study(pk=study_id, status=Study.Status.OPEN, votes_per_comparison=k),
                comparison_id=comparison_id,
                annotator_id=annotator.pk,
                token=token,
                left=left,
                status=status,
                first_delivered_at=_aware(delivered),
                lease_expires_at=_aware(expires),
            )
        )
    return VoteTarget(
        may_annotate=bool(may), assignment=assignment, done=done, remaining_others=remaining
    )


def open_studies_for(*, annotator) -> list[tuple[Study, Progress]]:
    now = timezone.now()
    studies = Study.objects.filter(status=Study.Status.OPEN).order_by("pk")
    return [(s, annotator_progress(study=s, annotator=annotator, now=now)) for s in studies]


def open_study(*, study_id: int) -> Study | None:
    return Study.objects.filter(pk=study_id, status=Study.Status.OPEN).first()


@dataclass(frozen=True)
class ShownPair:
    """Exactly what an annotator may see of an assignment (no ids but the token)."""

    token: str
    question: str
    left: str
    right: str


def masked_answer_text(*, study: Study, answer) -> str:
    spans = IdentityFlag.objects.filter(study=study, answer=answer, masked=True).values_list(
        "start", "end"
    )
    return apply_masks(answer.text, spans)


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
        row = _fetchone(_PAIR_SQL, {"comparison": assignment.comparison_id, "true": True})
        texts = PairTexts(*row[:5], masked=bool(row[5]))
    a_text, b_text = texts.answer_a, texts.answer_b
    if texts.masked:
        a_id, b_id = texts.answer_a_id, texts.answer_b_id
        spans = _masks(assignment.study_id, [a_id, b_id])
        a_text, b_text = apply_masks(a_text, spans[a_id]), apply_masks(b_text, spans[b_id])
    left, right = (a_text, b_text) if assignment.left == Assignment.Side.A else (b_text, a_text)
    return ShownPair(token=assignment.token, question=texts.question, left=left, right=right)


def study_flag_counts(*, study: Study) -> dict[str, int]:
    return IdentityFlag.objects.filter(study=study).aggregate(
        flags=Count("pk"), masked=Count("pk", filter=Q(masked=True))
    )


def study_vote_count(*, study: Study) -> int:
    return Vote.objects.filter(comparison__study=study).count()
