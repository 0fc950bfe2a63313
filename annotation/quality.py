"""How far a team can trust each annotator: time on task, gold-check accuracy, skips, and
whether their votes are left out of the results (staff only; these name annotators)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass

from django.contrib.auth import get_user_model

from .models import AnnotatorExclusion, Assignment, Study
from .study_votes import study_votes

# What the results call an annotator with no display name: a number that never changes (their
# account's), so one person reads the same in every table, export and page.
NUMBERED = "annotator {n}"


@dataclass(frozen=True)
class AnnotatorQuality:
    annotator_id: int
    username: str
    name: str  # as every table of the results calls them (``annotator_names``)
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
    for vote in study_votes(study).records:
        if vote.annotator_id is None:
            continue
        seconds[vote.annotator_id].append(vote.seconds or 0.0)
        if vote.gold:
            gold[vote.annotator_id][0] += 1
            gold[vote.annotator_id][1] += gold_correct(vote.outcome, vote.gold_expected)
    skips: dict[int, int] = defaultdict(int)
    for annotator_id in Assignment.objects.filter(
        study=study, status=Assignment.Status.SKIPPED
    ).values_list("annotator_id", flat=True):
        skips[annotator_id] += 1
    excluded = set(
        AnnotatorExclusion.objects.filter(study=study).values_list("annotator_id", flat=True)
    )
    ids = set(seconds) | set(skips) | excluded
    users = get_user_model().objects.filter(pk__in=ids)
    names = dict(users.values_list("pk", "username"))
    shown = _display_names(users)
    floor = study.fast_vote_seconds
    rows = [
        AnnotatorQuality(
            annotator_id=pk,
            username=names.get(pk, str(pk)),
            name=shown.get(pk) or numbered(pk),
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


def numbered(annotator_id: int) -> str:
    return NUMBERED.format(n=annotator_id)


def _display_names(users) -> dict[int, str]:
    found = users.values_list("pk", "first_name", "last_name")
    return {pk: f"{first} {last}".strip() for pk, first, last in found}


def annotator_names(*, study: Study) -> dict[int, str]:
    """Annotator id -> how the results call them: their display name (the account's full
    name), else "annotator N" with N their account's number."""
    ids = {r.annotator_id for r in study_votes(study).records if r.annotator_id is not None}
    shown = _display_names(get_user_model().objects.filter(pk__in=ids))
    return {pk: shown.get(pk) or numbered(pk) for pk in ids}


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
