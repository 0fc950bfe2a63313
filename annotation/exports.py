"""The raw exports of a study's votes: the votes CSV and FastChat battle JSONL (staff only).

Both carry ``turn``: how many user turns the conversation voted on has (FastChat's arena battle
records do the same); a battle's conversations hold every turn. With ``provenance`` each side's
answer also says how it was made (template version, why it stopped, token counts, revision).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from evalsite.exports import csv_text
from generation.models import Answer

from . import battles, figures
from .models import Comparison, Vote

VOTE_COLUMNS = (
    "vote_id",
    "question_position",
    "question_id",
    "category",
    "question",
    "turn",
    "model_a",
    "model_b",
    "outcome",
    "winner",
    "shown",
    "left_model",
    "annotator_id",
    "judge",
    "imported",
    "time",
    "seconds",
    "comment",
)
# What ``provenance`` adds of each side's answer (the one to the last user turn).
PROVENANCE_FIELDS = (
    "template",
    "stop_reason",
    "truncated",
    "prompt_tokens",
    "new_tokens",
    "model_revision",
)
PROVENANCE_COLUMNS = tuple(f"{side}_{name}" for side in "ab" for name in PROVENANCE_FIELDS)


def votes_csv(*, votes: Iterable[Vote], provenance: bool = False) -> str:
    """One row per vote (``votes``: with their comparisons, questions and models selected)."""
    votes = list(votes)
    columns = VOTE_COLUMNS + (PROVENANCE_COLUMNS if provenance else ())
    made = _provenance([v.comparison for v in votes]) if provenance else {}

    def row(vote: Vote) -> list:
        out = _vote_row(vote)
        if provenance:
            c = vote.comparison
            for answer_id in (c.answer_a_id, c.answer_b_id):
                for name in PROVENANCE_FIELDS:
                    value = made[answer_id][name]
                    out.append(int(value) if isinstance(value, bool) else value)
        return out

    return csv_text(columns, (row(vote) for vote in votes))


def _vote_row(vote: Vote) -> list:
    c = vote.comparison
    left_model = ""
    if vote.assignment_id:
        left_model = (c.run_a if vote.assignment.left == "a" else c.run_b).model.name
    winner = {"a": c.run_a.model.name, "b": c.run_b.model.name, "tie": "tie"}[vote.outcome]
    return [
        vote.pk,
        c.question.position,
        c.question.external_id,
        c.question.category,
        c.question.text,
        vote.turn or len(c.question.turns),
        c.run_a.model.name,
        c.run_b.model.name,
        vote.outcome,
        winner,
        vote.shown,
        left_model,
        vote.annotator_id or "",
        vote.judge,
        int(vote.imported),
        vote.created_at.isoformat(),
        "" if vote.seconds is None else f"{vote.seconds:.1f}",
        vote.comment,
    ]


def battles_jsonl(
    *, votes: Iterable[Vote], conversations: bool = True, provenance: bool = False
) -> str:
    """The votes in FastChat's battle shape (one JSON object per line); ``votes`` with their
    comparisons, questions, answers and models selected."""
    votes = list(votes)
    comparisons = [v.comparison for v in votes]
    earlier = _earlier_replies(comparisons) if conversations else {}
    made = _provenance(comparisons) if provenance else {}
    records = []
    for vote in votes:
        c = vote.comparison
        # A vote on an earlier turn (Vote.turn) holds the conversation up to that turn only.
        turns = c.question.turns[: vote.turn or None]
        last = None if vote.turn else c.answer_a, None if vote.turn else c.answer_b
        conversation_a = conversation_b = None
        if conversations:
            conversation_a = _conversation(turns, c.run_a_id, c.question_id, last[0], earlier)
            conversation_b = _conversation(turns, c.run_b_id, c.question_id, last[1], earlier)
        record = battles.BattleRecord(
            model_a=c.run_a.model.name,
            model_b=c.run_b.model.name,
            winner=_winner(vote),
            question_id=c.question.external_id or str(c.question.position),
            judge=vote.judge or (f"user {vote.annotator_id}" if vote.annotator_id else ""),
            tstamp=vote.created_at.timestamp(),
            conversation_a=conversation_a,
            conversation_b=conversation_b,
            turn=len(turns),
        )
        sides = {record.model_a: c.answer_a_id, record.model_b: c.answer_b_id}
        if figures.shown_first(vote) == "b":  # FastChat's model_a is the one shown first
            record = battles.swapped(record)
        if provenance:
            record = replace(
                record,
                extra={
                    "provenance_a": made[sides[record.model_a]],
                    "provenance_b": made[sides[record.model_b]],
                },
            )
        records.append(record)
    return battles.write_battles(records)


def _winner(vote: Vote) -> str:
    if vote.outcome == Vote.Outcome.TIE:
        return "tie (bothbad)" if vote.tie_kind == Vote.TieKind.BOTH_BAD else "tie"
    return {"a": "model_a", "b": "model_b"}[vote.outcome]


def _earlier_replies(comparisons: list[Comparison]) -> dict[tuple[int, int, int], str]:
    """(run, question, turn) -> reply, for the turns before the last of multi-turn questions."""
    multi = {c.question_id for c in comparisons if c.question.follow_ups}
    if not multi:
        return {}
    runs = {r for c in comparisons for r in (c.run_a_id, c.run_b_id)}
    found = Answer.objects.filter(run__in=runs, question__in=multi).values_list(
        "run_id", "question_id", "turn", "text"
    )
    return {(run, question, turn): text for run, question, turn, text in found}


def _conversation(
    turns, run_id: int, question_id: int, answer: Answer | None, earlier
) -> list[dict]:
    """Every user turn, each followed by this side's reply (the last one: the compared answer,
    or, ``answer`` None, the reply to that earlier turn)."""
    out = []
    for turn, question in enumerate(turns, start=1):
        if answer is not None and turn == len(turns):
            reply = answer.text
        else:
            reply = earlier.get((run_id, question_id, turn), "")
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return out


def _provenance(comparisons: list[Comparison]) -> dict[int, dict]:
    """answer id -> how it was made (PROVENANCE_FIELDS), for both answers of each comparison."""
    ids = {a for c in comparisons for a in (c.answer_a_id, c.answer_b_id)}
    answers = Answer.objects.filter(pk__in=ids).select_related("run__template")
    return {
        answer.pk: {
            "template": str(answer.run.template) if answer.run.template_id else "",
            "stop_reason": answer.stop_reason,
            "truncated": answer.truncated,
            "prompt_tokens": answer.prompt_tokens,
            "new_tokens": answer.new_tokens,
            "model_revision": answer.model_revision,
        }
        for answer in answers
    }
