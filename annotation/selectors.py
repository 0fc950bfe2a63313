"""Reads for the annotation app: who may annotate, loads, progress, what an annotator is shown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
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


def comparisons_with_load(
    *, study: Study, now: datetime, exclude_annotator=None
) -> QuerySet[Comparison]:
    """Comparisons annotated with ``votes``, ``leases`` (live, unvoted) and ``load`` (their sum).

    With ``exclude_annotator`` that annotator's own lease does not count: it is theirs to use.
    """
    leases = live_leases(now=now)
    if exclude_annotator is not None:
        leases = leases.exclude(annotator=exclude_annotator)
    return (
        Comparison.objects.filter(study=study)
        .order_by()  # the default ordering joins study and question for nothing here
        .annotate(votes_n=_count(Vote.objects.all()), leases_n=_count(leases))
        .annotate(load=Coalesce("votes_n", 0) + Coalesce("leases_n", 0))
    )


def comparison_load(*, comparison: Comparison, now: datetime, exclude_annotator=None) -> int:
    """Votes plus live leases of one comparison, read fresh (call after locking its row)."""
    leases = live_leases(now=now).filter(comparison=comparison)
    if exclude_annotator is not None:
        leases = leases.exclude(annotator=exclude_annotator)
    return Vote.objects.filter(comparison=comparison).count() + leases.count()


def available_comparisons(*, study: Study, annotator, now: datetime) -> QuerySet[Comparison]:
    """What can still be given to this annotator: below K counting others' live leases, and
    never assigned to them (except the pair they hold right now)."""
    done_or_dropped = Assignment.objects.filter(
        comparison=OuterRef("pk"), annotator=annotator
    ).exclude(status=Assignment.Status.LEASED)
    return (
        comparisons_with_load(study=study, now=now, exclude_annotator=annotator)
        .filter(load__lt=study.votes_per_comparison)
        .exclude(Exists(done_or_dropped))
    )


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


def annotator_progress(*, study: Study, annotator, now: datetime | None = None) -> Progress:
    """done: their votes in the study; total: done + what can still be given to them."""
    now = now or timezone.now()
    done = Vote.objects.filter(comparison__study=study, annotator=annotator).count()
    remaining = available_comparisons(study=study, annotator=annotator, now=now).count()
    return Progress(done=done, total=done + remaining)


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


def shown_pair(*, assignment: Assignment) -> ShownPair:
    comparison = (
        Comparison.objects.select_related("question", "answer_a", "answer_b")
        .filter(pk=assignment.comparison_id)
        .get()
    )
    study = assignment.study
    a = masked_answer_text(study=study, answer=comparison.answer_a)
    b = masked_answer_text(study=study, answer=comparison.answer_b)
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
