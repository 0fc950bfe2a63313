"""How far a team can trust each annotator: time on task, gold-check accuracy, skips, and
whether their votes are left out of the results (staff only; these name annotators)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass

from django.contrib.auth import get_user_model

from .models import AnnotatorExclusion, Assignment, Study, Vote


@dataclass(frozen=True)
class AnnotatorQuality:
    annotator_id: int
    username: str
    votes: int  # every vote they cast here, gold checks included
    median_seconds: float | None
    fast_votes: int  # votes faster than the study's floor (fast_vote_seconds)
    gold_votes: int
    gold_correct: int
    skips: int
    excluded: bool

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_votes if self.gold_votes else None


def gold_correct(vote_outcome: str, expected: str) -> bool:
    return vote_outcome == expected


def annotator_quality(*, study: Study) -> list[AnnotatorQuality]:
    """One row per annotator who voted or skipped in the study, most votes first."""
    seconds: dict[int, list[float]] = defaultdict(list)
    gold: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    app_votes = Vote.objects.filter(comparison__study=study, annotator__isnull=False)
    for annotator_id, secs, outcome, is_gold, expected in app_votes.values_list(
        "annotator_id", "seconds", "outcome", "comparison__gold", "comparison__gold_expected"
    ):
        seconds[annotator_id].append(secs or 0.0)
        if is_gold:
            gold[annotator_id][0] += 1
            gold[annotator_id][1] += gold_correct(outcome, expected)
    skips: dict[int, int] = defaultdict(int)
    for annotator_id in Assignment.objects.filter(
        study=study, status=Assignment.Status.SKIPPED
    ).values_list("annotator_id", flat=True):
        skips[annotator_id] += 1
    excluded = set(
        AnnotatorExclusion.objects.filter(study=study).values_list("annotator_id", flat=True)
    )
    ids = set(seconds) | set(skips) | excluded
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    floor = study.fast_vote_seconds
    rows = [
        AnnotatorQuality(
            annotator_id=pk,
            username=names.get(pk, str(pk)),
            votes=len(seconds[pk]),
            median_seconds=statistics.median(seconds[pk]) if seconds[pk] else None,
            fast_votes=sum(1 for s in seconds[pk] if s < floor),
            gold_votes=gold[pk][0],
            gold_correct=gold[pk][1],
            skips=skips[pk],
            excluded=pk in excluded,
        )
        for pk in ids
    ]
    rows.sort(key=lambda r: (-r.votes, r.username))
    return rows


def quality_dict(row: AnnotatorQuality) -> dict:
    return {**asdict(row), "gold_accuracy": row.gold_accuracy}


def annotator_exclude(*, study: Study, annotator_id: int, excluded: bool, user=None) -> bool:
    """Leave the annotator's votes out of the study's results (``excluded``) or count them
    again; returns whether anything changed. Votes themselves are never touched. An unknown
    user raises LookupError."""
    if not get_user_model().objects.filter(pk=annotator_id).exists():
        raise LookupError(f"no user {annotator_id}")
    if excluded:
        _, created = AnnotatorExclusion.objects.get_or_create(
            study=study, annotator_id=annotator_id, defaults={"excluded_by": user}
        )
        return created
    deleted, _ = AnnotatorExclusion.objects.filter(study=study, annotator_id=annotator_id).delete()
    return bool(deleted)
