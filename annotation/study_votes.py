"""A study's votes read once for everything a results request shows.

The results page used to ask the vote table for the counted rows, the annotators' quality, the
people's and the judge's votes of the prediction-powered fit and the judge agreement one query
each. ``reading(study)`` reads every vote of the study once, as plain ``VoteRecord``s, and every
reader in the request (``results``, ``quality``, ``powered``, the judge's section through the
hooks) filters that list instead. Outside ``reading`` each call reads afresh, so a long-lived
caller (a task, a command) never sees stale votes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import BooleanField, ExpressionWrapper, Value

from .hooks import PeopleDesign, people_design
from .models import AnnotatorExclusion, Study, Vote

_FIELDS = {
    "pk": "pk",
    "voter": "voter",
    "annotator_id": "annotator_id",
    "judge": "judge",
    "turn": "turn",
    "outcome": "outcome",
    "tie_kind": "tie_kind",
    "seconds": "seconds",
    "first_shown": "first_shown",
    "comparison_id": "comparison_id",
    "gold": "comparison__gold",
    "gold_expected": "comparison__gold_expected",
    "question_id": "comparison__question_id",
    "category": "comparison__question__category",
    "model_a": "comparison__run_a__model__name",
    "model_b": "comparison__run_b__model__name",
    "assignment_id": "assignment_id",
    "left": "assignment__left",
    "probability": "assignment__sampling_probability",
    "eligible": "assignment__sampling_eligible",
    "cap": "cap",
    "asked": "asked",
    "share": "share",
    "k": "comparison__study__votes_per_comparison",
}


@dataclass(frozen=True)
class VoteRecord:
    pk: int
    voter: str
    annotator_id: int | None
    judge: str
    turn: int | None
    outcome: str
    tie_kind: str
    seconds: float | None
    first_shown: str
    comparison_id: int
    gold: bool
    gold_expected: str
    question_id: int
    category: str
    model_a: str  # model names (results label them: ``results.study_labels``)
    model_b: str
    assignment_id: int | None
    left: str | None
    probability: float | None
    eligible: int | None
    cap: int | None  # adaptive K (``Vote.cap``, ``Vote.asked``); None in other designs
    asked: float | None
    share: float | None  # the staged design's stage share (``Vote.share``); None elsewhere
    k: int  # the study's K
    in_design: bool  # one of the judge votes the study's people design rests on

    @property
    def weight(self) -> float:
        """What the vote counts for in the fit : K x share / (slots x p) for a staged vote
        (``ranking.designs.stage_weight``, in units of uniform K's votes), K / (cap x asked)
        for an adaptive-K vote; 1 / (n p) for an active-sampling pick; else 1."""
        # ranking imports scipy: when a vote is weighed, not when the vote path is imported
        # (every Django process imports it through the URLs at start-up).
        from .ranking.active import importance_weight
        from .ranking.designs import stage_weight

        if self.share is not None and self.asked is not None and self.cap:
            return self.k * stage_weight(self.share, self.cap, self.asked)
        if self.asked is not None and self.cap:
            return self.k / (self.cap * self.asked)
        if self.assignment_id is None:
            return 1.0
        return importance_weight(self.probability, self.eligible)

    @property
    def shown_first(self) -> str | None:
        """Which answer ("a" / "b") was shown first; None when unknown (some imports)."""
        if self.assignment_id is not None:
            return self.left
        return self.first_shown or None


@dataclass(frozen=True)
class StudyVotes:
    records: list[VoteRecord]  # every vote of the study, gold checks and every turn, by id
    excluded: frozenset[int]  # annotators whose votes are left out
    design: PeopleDesign | None

    def counted(self, voters: str = "people", turn: int | None = None) -> list[VoteRecord]:
        """The votes that count (``results.counted_votes`` in Python): never a gold check's,
        never an excluded annotator's; only ``voters``' (``all``: both kinds); ``turn``'s."""
        return [
            r
            for r in self.records
            if not r.gold
            and r.turn == turn
            and (voters == "all" or r.voter == voters)
            and r.annotator_id not in self.excluded
        ]

    @property
    def excluded_key(self) -> str:
        return "-".join(str(pk) for pk in sorted(self.excluded)) or "none"


# Per thread / task context, so concurrent requests of a threaded server never share a read.
_READING: contextvars.ContextVar[dict[int, StudyVotes] | None] = contextvars.ContextVar(
    "annotation_study_votes", default=None
)


def _read(study: Study) -> StudyVotes:
    design = people_design(study)
    found = Vote.objects.filter(comparison__study=study).order_by("pk")
    in_design = Value(True)
    if design is not None and design.judge_votes is not None:
        in_design = ExpressionWrapper(design.judge_votes, output_field=BooleanField())
    found = found.annotate(in_design=in_design)
    names = list(_FIELDS)
    records = [
        VoteRecord(**dict(zip(names, values, strict=True)), in_design=bool(flag))
        for *values, flag in found.values_list(*_FIELDS.values(), "in_design")
    ]
    excluded = AnnotatorExclusion.objects.filter(study=study).values_list("annotator_id", flat=True)
    return StudyVotes(records=records, excluded=frozenset(excluded), design=design)


def study_votes(study: Study) -> StudyVotes:
    """The study's votes: the ones ``reading`` holds, else a fresh read."""
    found = (_READING.get() or {}).get(study.pk)
    return found if found is not None else _read(study)


@contextlib.contextmanager
def reading(study: Study) -> Iterator[StudyVotes]:
    """Read the study's votes once and serve every ``study_votes`` call inside from that read
    (one request: a results page, an API read, an export)."""
    found = _read(study)
    token = _READING.set({**(_READING.get() or {}), study.pk: found})
    try:
        yield found
    finally:
        _READING.reset(token)
