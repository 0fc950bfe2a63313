"""Reads for the annotation app: who may annotate, loads, progress, what an annotator is shown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from .identity import apply_masks
from .models import Assignment, Comparison, IdentityFlag, Study, Vote

ANNOTATORS_GROUP = "annotators"


def user_is_annotator(user) -> bool:
    """Annotators (the ``annotators`` group) and staff may judge; nobody else."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_staff or user.groups.filter(name=ANNOTATORS_GROUP).exists()


def _count(queryset: QuerySet, key: str = "comparison") -> Coalesce:
    return Coalesce(
        Subquery(
            queryset.filter(**{key: OuterRef("pk")})
            .order_by()
            .values(key)
            .annotate(n=Count("pk"))
            .values("n"),
            output_field=IntegerField(),
        ),
        0,
    )


def live_leases(*, now: datetime) -> QuerySet[Assignment]:
    return Assignment.objects.filter(status=Assignment.Status.LEASED, lease_expires_at__gt=now)


def comparison_load(*, comparison: Comparison, now: datetime, exclude_annotator=None) -> int:
    """Votes plus live leases of one comparison, read fresh (call after locking its row)."""
    leases = live_leases(now=now).filter(comparison=comparison)
    if exclude_annotator is not None:
        leases = leases.exclude(annotator=exclude_annotator)
    return Vote.objects.filter(comparison=comparison).count() + leases.count()


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


def _comparison_ids(study_id: int) -> tuple[int, ...]:
    return tuple(
        Comparison.objects.filter(study_id=study_id).order_by("pk").values_list("pk", flat=True)
    )


@dataclass(frozen=True)
class StudyLoads:
    """One annotator's view of a study's loads, read with a few aggregate queries.

    Load = votes + live leases. The annotator's own live lease does not count against the
    comparison it is on when asking what is still available to them.
    """

    k: int
    comparisons: tuple[int, ...]
    votes: dict[int, int]
    leases: dict[int, int]
    own_live: int | None  # comparison of the annotator's own live lease
    own_leased: frozenset[int]  # comparisons they hold (lease live or run out)
    dropped: frozenset[int]  # comparisons they voted on or whose lease went to someone else
    done: int

    def load(self, comparison_id: int, *, excluding_own: bool = False) -> int:
        own = 1 if excluding_own and comparison_id == self.own_live else 0
        return self.votes.get(comparison_id, 0) + self.leases.get(comparison_id, 0) - own

    def candidates(self) -> list[tuple[int, int]]:
        """(comparison, load) for comparisons never given to this annotator and below K."""
        taken = self.dropped | self.own_leased
        return [
            (c, self.load(c)) for c in self.comparisons if c not in taken and self.load(c) < self.k
        ]

    def progress(self) -> Progress:
        remaining = sum(
            1
            for c in self.comparisons
            if c not in self.dropped and self.load(c, excluding_own=True) < self.k
        )
        return Progress(done=self.done, total=self.done + remaining)


def study_loads(*, study: Study, annotator, now: datetime) -> StudyLoads:
    votes = dict(
        Vote.objects.filter(comparison__study=study)
        .order_by()
        .values_list("comparison")
        .annotate(n=Count("pk"))
    )
    leases = dict(
        live_leases(now=now)
        .filter(study=study)
        .order_by()
        .values_list("comparison")
        .annotate(n=Count("pk"))
    )
    own = list(
        Assignment.objects.filter(study=study, annotator=annotator)
        .order_by()
        .values_list("comparison_id", "status", "lease_expires_at")
    )
    leased = [(c, until) for c, status, until in own if status == Assignment.Status.LEASED]
    return StudyLoads(
        k=study.votes_per_comparison,
        comparisons=_comparison_ids(study.pk),
        votes=votes,
        leases=leases,
        own_live=next((c for c, until in leased if until > now), None),
        own_leased=frozenset(c for c, _ in leased),
        dropped=frozenset(c for c, status, _ in own if status != Assignment.Status.LEASED),
        done=sum(1 for _, status, _ in own if status == Assignment.Status.VOTED),
    )


def annotator_progress(*, study: Study, annotator, now: datetime | None = None) -> Progress:
    """done: their votes in the study; total: done + what can still be given to them."""
    return study_loads(study=study, annotator=annotator, now=now or timezone.now()).progress()


def open_studies_for(*, annotator) -> list[tuple[Study, Progress]]:
    now = timezone.now()
    studies = Study.objects.filter(status=Study.Status.OPEN).order_by("pk")
    return [(s, annotator_progress(study=s, annotator=annotator, now=now)) for s in studies]


def open_study(*, study_id: int) -> Study | None:
    return Study.objects.filter(pk=study_id, status=Study.Status.OPEN).first()


def assignment_for_annotator(*, token: str, annotator) -> Assignment | None:
    """The annotator's own assignment in an open study; anyone else's token is unknown."""
    return (
        Assignment.objects.select_related("study", "comparison")
        .filter(token=token, annotator=annotator, study__status=Study.Status.OPEN)
        .first()
    )


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


def _masked_pair(study: Study, answer_a, answer_b) -> tuple[str, str]:
    spans: dict[int, list[tuple[int, int]]] = {answer_a.pk: [], answer_b.pk: []}
    for answer_id, start, end in IdentityFlag.objects.filter(
        study=study, answer__in=[answer_a.pk, answer_b.pk], masked=True
    ).values_list("answer_id", "start", "end"):
        spans[answer_id].append((start, end))
    return (
        apply_masks(answer_a.text, spans[answer_a.pk]),
        apply_masks(answer_b.text, spans[answer_b.pk]),
    )


def shown_pair(*, assignment: Assignment) -> ShownPair:
    comparison = (
        Comparison.objects.select_related("question", "answer_a", "answer_b")
        .filter(pk=assignment.comparison_id)
        .get()
    )
    a, b = _masked_pair(assignment.study, comparison.answer_a, comparison.answer_b)
    left, right = (a, b) if assignment.left == Assignment.Side.A else (b, a)
    return ShownPair(
        token=assignment.token, question=comparison.question.text, left=left, right=right
    )


def study_flag_counts(*, study: Study) -> dict[str, int]:
    return IdentityFlag.objects.filter(study=study).aggregate(
        flags=Count("pk"), masked=Count("pk", filter=Q(masked=True))
    )


def study_vote_count(*, study: Study) -> int:
    return Vote.objects.filter(comparison__study=study).count()
