"""The staged design in the live loop (annotation/staging.py): the vote that takes a slot of a
staged study's comparison records the stage that asked for it, the stage's share of the human
budget, the comparison's slots in it and the chance it was drawn (``Vote.stage``, ``share``,
``cap``, ``asked``: the fit weighs it share / (slots x probability)); the vote that fills the
last open comparison of a stage queues the next stage's plan, on commit.

Called by loop/votes.py in the vote's transaction, after the vote is in (it holds the
comparison's row lock, so the comparison's stage cannot move under it)."""

from __future__ import annotations

from ..models import StageDraw, Vote
from ..staging import stage_filled


def staged_vote_taken(vote_id: int, assignment, *, filled: bool) -> None:
    """Record vote ``vote_id`` (on ``assignment``) as its stage's; ``filled``: it was the last
    vote its comparison wanted."""
    draw = (
        StageDraw.objects.filter(comparison_id=assignment.comparison_id)
        .select_related("plan")
        .order_by("-plan__stage")
        .first()
    )
    if draw is None:  # a gold check (no stage draws it)
        return
    Vote.objects.filter(pk=vote_id).update(
        stage=draw.plan.stage, share=draw.plan.share, cap=draw.slots, asked=draw.probability
    )
    if filled:
        stage_filled(assignment.study_id)
