"""The staff home's figures (page and API): studies with progress and pace, work of every kind
(runs of each registered kind, and sweeps) with status, progress and time, and skipped pairs
waiting for a look."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext

from evalsite.runs import listing

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


def work_list(*, user, kind: str = "", status: str = "", limit: int = RECENT_RUNS) -> list[dict]:
    """Work of every kind ``user`` may view (runs of each registered kind, and sweeps through
    their work source), filtered by kind and status, failures first: each row with how long it
    has been queued or running (or ran), as the staff pages show it. ValueError for a filter
    that is not one."""
    now = timezone.now()
    return [
        {"row": row, "duration": duration_text(row.phase_seconds(now))}
        for row in listing.work_rows(user=user, kind=kind, status=status, limit=limit)
    ]


def duration_text(seconds: float | None) -> str:
    """ "45 s", "12 min", "3 h 05 min", "2 d 4 h" ("" for none), in the page's language."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return gettext("%(s)d s") % {"s": seconds}
    minutes = seconds // 60
    if minutes < 60:
        return gettext("%(m)d min") % {"m": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return gettext("%(h)d h %(m)02d min") % {"h": hours, "m": minutes}
    days, hours = divmod(hours, 24)
    return gettext("%(d)d d %(h)d h") % {"d": days, "h": hours}


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


def summary_dict(*, user) -> dict:
    """The staff home's figures as the API gives them (the runs ``user`` may view)."""
    return {
        "studies": [{**asdict(s), "progress": s.progress} for s in study_summaries()],
        "runs": [r.as_dict() for r in listing.work_rows(user=user, limit=RECENT_RUNS)],
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
