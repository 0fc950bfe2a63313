"""The staff home's figures (page and API): studies with progress and pace, runs of every kind
with status and progress, and skipped pairs waiting for a look."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from generation.models import FineTuneRun, GenerationRun

from .models import Assignment, Study, Vote

RECENT_RUNS = 20
RECENT_SKIPS = 50


@dataclass(frozen=True)
class StudySummary:
    id: int
    name: str
    status: str
    comparisons: int
    gold: int
    votes: int  # on ordinary comparisons (gold checks are not progress)
    wanted: int  # per ordinary comparison its target (K, or what routing left it), summed
    votes_last_hour: int  # every app vote, gold included: the annotators' pace
    annotators: int
    skips: int
    opened_at: str | None

    @property
    def progress(self) -> float:
        return min(1.0, self.votes / self.wanted) if self.wanted else 0.0


@dataclass(frozen=True)
class RunSummary:
    kind: str  # "generation" | "finetune"
    id: int
    model: str
    status: str
    done: int
    total: int
    created_at: str

    @property
    def progress(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


def study_summaries(*, statuses=(Study.Status.OPEN, Study.Status.DRAFT)) -> list[StudySummary]:
    hour_ago = timezone.now() - timedelta(hours=1)
    studies = (
        Study.objects.filter(status__in=statuses)
        .annotate(
            n_comparisons=Count("comparisons", distinct=True),
            n_gold=Count("comparisons", filter=Q(comparisons__gold=True), distinct=True),
            n_wanted=Sum(
                Coalesce("comparisons__votes_wanted", "votes_per_comparison"),
                filter=Q(comparisons__gold=False),
            ),
        )
        .order_by("status", "-created_at")
    )
    out = []
    for study in studies:
        # People's votes: a judge's verdicts are not progress towards K.
        votes = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.PEOPLE)
        ordinary = study.n_comparisons - study.n_gold
        out.append(
            StudySummary(
                id=study.pk,
                name=study.name,
                status=study.status,
                comparisons=ordinary,
                gold=study.n_gold,
                votes=votes.filter(comparison__gold=False).count(),
                wanted=study.n_wanted or 0,
                votes_last_hour=votes.filter(imported=False, created_at__gte=hour_ago).count(),
                annotators=votes.exclude(annotator=None).values("annotator").distinct().count(),
                skips=Assignment.objects.filter(
                    study=study, status=Assignment.Status.SKIPPED
                ).count(),
                opened_at=study.opened_at.isoformat() if study.opened_at else None,
            )
        )
    return out


def run_summaries(*, limit: int = RECENT_RUNS, finetunes: bool = True) -> list[RunSummary]:
    """Active runs of every kind, then the latest others, newest first."""
    runs = []
    for run in GenerationRun.objects.select_related("model").order_by("-created_at")[:limit]:
        runs.append(
            RunSummary(
                "generation",
                run.pk,
                run.model.name,
                run.status,
                run.done,
                run.total,
                run.created_at.isoformat(),
            )
        )
    found = FineTuneRun.objects.select_related("base_model").order_by("-created_at")
    for run in found[:limit] if finetunes else ():
        runs.append(
            RunSummary(
                "finetune",
                run.pk,
                run.base_model.name,
                run.status,
                run.step,
                run.total_steps,
                run.created_at.isoformat(),
            )
        )
    active = {GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING}
    runs.sort(key=lambda r: r.created_at, reverse=True)
    runs.sort(key=lambda r: r.status not in active)
    return runs[:limit]


def skipped_pairs(*, study: Study | None = None, limit: int = RECENT_SKIPS) -> list[Assignment]:
    """The latest skipped assignments (flagged pairs), with their comparison's question."""
    found = Assignment.objects.filter(status=Assignment.Status.SKIPPED)
    if study is not None:
        found = found.filter(study=study)
    return list(
        found.select_related("study", "comparison__question", "annotator").order_by(
            "-first_delivered_at"
        )[:limit]
    )


def summary_dict() -> dict:
    """The staff home's figures as the API gives them."""
    return {
        "studies": [{**asdict(s), "progress": s.progress} for s in study_summaries()],
        "runs": [{**asdict(r), "progress": r.progress} for r in run_summaries()],
        "skipped": [
            {
                "study": a.study_id,
                "comparison": a.comparison_id,
                "question": a.comparison.question.text,
                "annotator": a.annotator.get_username(),
                "reason": a.skip_reason,
            }
            for a in skipped_pairs()
        ],
    }
