"""What a judge run asks, verdict by verdict: which prompt each question gets and the text it
renders, whole conversations included. Read by the worker (judge.py) for the verdicts a run is
missing, and at creation (runs.py) to check that the longest prompt fits the judge.

The prompt a question gets (``PromptPlan.prompt_for``): the run's reference prompt for a
question of one of its reference categories (MT-Bench: math, reasoning, coding), else the run's
prompt; for a conversation of more than one turn, that prompt's multi-turn variant (the prompt
itself when it shows every turn), unless the run judges the last turn only.

A conversation is shown whole: every user turn up to the one compared or graded, and the
replies to each earlier turn, both models' (pairwise, in the order the answers are shown) or
the graded model's own (grading). The app stores one reference answer per question: it is the
reference of the first turn and of the question (``reference``); later turns have none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from annotation.models import Comparison, Study
from generation.models import Answer

from .engine import verdicts
from .models import JudgePrompt, JudgeRun
from .prompts import as_judge_template

PAIR, ANSWER = "pair", "answer"


@dataclass(frozen=True)
class Item:
    """One verdict to ask for: a comparison in one order, or one answer to grade."""

    key: tuple
    # The rendered judge prompt, as the judge's user turn: without its closing newline (the
    # template writes what follows a user turn; a teaching example is stripped the same way).
    text: str
    prompt_id: int
    comparison_id: int | None = None
    first: str = ""
    answer_id: int | None = None
    turns: int = 1  # user turns the judge was shown


@dataclass(frozen=True)
class PromptPlan:
    prompt: JudgePrompt
    multi_turn_prompt: JudgePrompt | None = None
    reference_prompt: JudgePrompt | None = None
    reference_multi_turn_prompt: JudgePrompt | None = None
    reference_categories: tuple[str, ...] = ()
    last_turn_only: bool = False
    templates: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, run: JudgeRun) -> PromptPlan:
        return cls(
            prompt=run.prompt,
            multi_turn_prompt=run.multi_turn_prompt,
            reference_prompt=run.reference_prompt,
            reference_multi_turn_prompt=run.reference_multi_turn_prompt,
            reference_categories=tuple(run.reference_categories or ()),
            last_turn_only=run.last_turn_only,
        )

    def prompt_for(self, category: str, turns: int) -> JudgePrompt:
        """The prompt a question of ``category`` asked over ``turns`` user turns gets."""
        referenced = self.reference_prompt is not None and category_in(
            category, self.reference_categories
        )
        single = self.reference_prompt if referenced else self.prompt
        if turns <= 1 or self.last_turn_only or single.multi_turn:
            return single
        multi = self.reference_multi_turn_prompt if referenced else self.multi_turn_prompt
        return multi or single

    def prompts(self) -> list[JudgePrompt]:
        found = [
            self.prompt,
            self.multi_turn_prompt,
            self.reference_prompt,
            self.reference_multi_turn_prompt,
        ]
        return list({p.pk: p for p in found if p is not None}.values())

    def template(self, prompt: JudgePrompt) -> verdicts.JudgeTemplate:
        if prompt.pk not in self.templates:
            self.templates[prompt.pk] = as_judge_template(prompt)
        return self.templates[prompt.pk]


def category_in(category: str, categories: Iterable[str]) -> bool:
    return (category or "").strip().lower() in {c.strip().lower() for c in categories}


def _earlier_replies(run_ids: Iterable[int], question_ids: Iterable[int]) -> dict[tuple, str]:
    """(generation run id, question id, turn) -> reply text, for every answer of those."""
    rows = Answer.objects.filter(run_id__in=set(run_ids), question_id__in=set(question_ids))
    values = rows.values_list("run_id", "question_id", "turn", "text")
    return {(run, question, turn): text for run, question, turn, text in values}


def _conversation(question, turn: int, replies: list[dict], last_turn_only: bool) -> list[dict]:
    """The turns shown: user turn n with ``replies[n - 1]`` (each a mapping of answer values)."""
    user_turns = question.turns
    shown = []
    for n in range(1, turn + 1):
        entry = {
            "question": user_turns[min(n, len(user_turns)) - 1],
            "reference": question.reference if n == 1 else "",
            **replies[n - 1],
        }
        shown.append(entry)
    return shown[-1:] if last_turn_only else shown


def comparisons_of(study: Study, comparison_ids: list[int]):
    """The comparisons a pairwise run judges: its chosen ids, or every non-gold one."""
    comparisons = Comparison.objects.filter(study=study)
    if comparison_ids:
        return comparisons.filter(pk__in=comparison_ids)
    return comparisons.filter(gold=False)


def pair_items(
    plan: PromptPlan, comparisons, stored: set[tuple[int, str]] = frozenset()
) -> list[Item]:
    """Every (comparison, order) not in ``stored``, rendered."""
    comparisons = list(comparisons.select_related("question", "answer_a", "answer_b"))
    replies = _earlier_replies(
        [c.answer_a.run_id for c in comparisons] + [c.answer_b.run_id for c in comparisons],
        [c.question_id for c in comparisons],
    )
    items = []
    for c in sorted(comparisons, key=lambda c: c.pk):
        turn = c.answer_a.turn
        question = c.question
        prompt = plan.prompt_for(question.category, 1 if plan.last_turn_only else turn)
        judge = plan.template(prompt)
        for first in ("a", "b"):
            if (c.pk, first) in stored:
                continue
            one, two = (c.answer_a, c.answer_b) if first == "a" else (c.answer_b, c.answer_a)
            said = [
                {
                    "answer_1": replies.get((one.run_id, question.pk, n), ""),
                    "answer_2": replies.get((two.run_id, question.pk, n), ""),
                }
                for n in range(1, turn)
            ]
            said.append({"answer_1": one.text, "answer_2": two.text})
            turns = _conversation(question, turn, said, plan.last_turn_only)
            text = verdicts.render(
                judge, turns=turns, reference=question.reference, criteria=question.criteria
            )
            items.append(
                Item(
                    (PAIR, c.pk, first),
                    text.strip(),
                    prompt.pk,
                    comparison_id=c.pk,
                    first=first,
                    turns=len(turns),
                )
            )
    return items


def answer_items(plan: PromptPlan, answers) -> list[Item]:
    """Every answer of ``answers`` graded, rendered with the model's own earlier replies."""
    answers = list(answers.select_related("question"))
    replies = _earlier_replies([a.run_id for a in answers], [a.question_id for a in answers])
    items = []
    for answer in sorted(answers, key=lambda a: a.pk):
        question = answer.question
        prompt = plan.prompt_for(question.category, 1 if plan.last_turn_only else answer.turn)
        said = [
            {"answer": replies.get((answer.run_id, question.pk, n), "")}
            for n in range(1, answer.turn)
        ]
        said.append({"answer": answer.text})
        turns = _conversation(question, answer.turn, said, plan.last_turn_only)
        text = verdicts.render(
            plan.template(prompt),
            turns=turns,
            reference=question.reference,
            criteria=question.criteria,
        )
        key = (ANSWER, answer.pk)
        items.append(Item(key, text.strip(), prompt.pk, answer_id=answer.pk, turns=len(turns)))
    return items
