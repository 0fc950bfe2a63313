"""Training rows that overlap an evaluation prompt set: what a fine-tune's and a sweep's page and
command warn about (engine: generation/engine/overlap.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..engine.examples import join_instruction
from ..engine.overlap import NEAR, find_overlap
from ..models import InstructionDataset, InstructionExample, PromptSet

OVERLAP_WARNING = (
    "{questions} of {total} evaluation questions of prompt set {name!r} are in the training rows "
    "({exact} exact, {near} near-duplicate after normalisation, character 3-gram Jaccard >= "
    "{threshold:g}; {rows} training rows): scores on this prompt set overstate the model"
)


@dataclass(frozen=True)
class PromptSetOverlap:
    prompt_set: str
    total: int
    exact: int
    near: int
    rows: int

    @property
    def questions(self) -> int:
        return self.exact + self.near

    def message(self) -> str:
        return OVERLAP_WARNING.format(
            questions=self.questions,
            total=self.total,
            name=self.prompt_set,
            exact=self.exact,
            near=self.near,
            rows=self.rows,
            threshold=NEAR,
        )


def _training_texts(datasets: Iterable[InstructionDataset]) -> list[str]:
    rows = InstructionExample.objects.filter(dataset__in=list(datasets)).values_list(
        "instruction", "input"
    )
    return [join_instruction(instruction, input_text) for instruction, input_text in rows]


def training_overlap(
    *, datasets: Iterable[InstructionDataset], prompt_sets: Iterable[PromptSet]
) -> list[PromptSetOverlap]:
    """For each prompt set whose questions (any user turn) the data sets' rows hold, exactly or
    nearly: how many (a question counts once, as exact if any row is exact)."""
    training = _training_texts(datasets)
    if not training:
        return []
    # One pass over the training rows for every prompt set: each question turn is an
    # evaluation text owned by (set, question).
    sets = list(prompt_sets)
    texts, owner, totals = [], [], []
    for s, prompt_set in enumerate(sets):
        questions = list(prompt_set.questions.order_by("position"))
        totals.append(len(questions))
        for n, question in enumerate(questions):
            for turn in question.turns:
                texts.append(turn)
                owner.append((s, n))
    found = find_overlap(training, texts)
    out = []
    for s, prompt_set in enumerate(sets):
        exact = {owner[i][1] for i in found.exact if owner[i][0] == s}
        near = {owner[i][1] for i in found.near if owner[i][0] == s} - exact
        if exact or near:
            rows = {row for row, i, _ in found.pairs if owner[i][0] == s}
            out.append(
                PromptSetOverlap(
                    prompt_set=prompt_set.name,
                    total=totals[s],
                    exact=len(exact),
                    near=len(near),
                    rows=len(rows),
                )
            )
    return out


def finetune_overlap(run) -> list[PromptSetOverlap]:
    """A fine-tune run's training rows against every prompt set (the model it makes may be
    evaluated on any of them); only sets it overlaps are returned."""
    return training_overlap(datasets=run.datasets.all(), prompt_sets=PromptSet.objects.all())
