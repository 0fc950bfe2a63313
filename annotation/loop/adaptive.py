"""Adaptive K in the live loop: after each people's vote on a comparison of an adaptive study,
whether the next person is asked, by the rule of ``ranking.adaptive`` (the one the cost bench
simulates), with the probabilities recorded on the vote.

An adaptive study opens with every comparison wanting one vote (``votes_wanted`` 1, see
``studies.study_open``), so one person at a time holds it. The vote that takes a slot (loop/
votes.py) asks ``adaptive_decision`` first, under the comparison's row lock, and writes its
answer in the same UPDATE that counts the vote: ``votes_wanted`` becomes the votes so far
plus one when the next person is asked, or the votes so far when the comparison stops (it is
then full, and the vote keeps the stored progress as any filling vote does). The vote records
its comparison's cap, the chance it was asked and the chance the next one is; the fit weights
it by 1 / (cap x asked) (``study_votes.VoteRecord.weight``, ``powered``), which keeps the strengths
unbiased whatever the stopping did (``ranking.adaptive``'s docstring says why).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..models import Comparison, Vote

_random = random.SystemRandom()
SCORE = {Vote.Outcome.A: 1.0, Vote.Outcome.TIE: 0.5, Vote.Outcome.B: 0.0}


@dataclass(frozen=True)
class Decision:
    cap: int  # the most people this comparison asks
    asked: float  # the chance this vote was asked for
    next_asked: float  # the chance the next one is (0: this vote is the last)
    wanted: int  # the comparison's target after this vote (votes_wanted)


def adaptive_decision(*, comparison_id: int, outcome: str, k: int) -> Decision | None:
    """Lock the comparison and decide, for a people's vote with ``outcome`` about to be taken
    on it, whether the next person is asked. None for a gold check (no K). Call inside the
    vote's transaction, before it takes the slot."""
    # ranking imports scipy: here, not when the vote path is imported (every Django process
    # imports it through the URLs at start-up).
    import numpy as np

    from ..ranking import adaptive

    count, gold, weight = (
        Comparison.objects.select_for_update(of=("self",))
        .filter(pk=comparison_id)
        .order_by()
        .values_list("vote_count", "gold", "sampling_weight")
        .get()
    )
    if gold:
        return None
    people = list(
        Vote.objects.filter(comparison_id=comparison_id, voter=Vote.Voter.PEOPLE, turn__isnull=True)
        .order_by("pk")
        .values_list("outcome", "cap", "asked", "next_asked")
    )
    chain = [row for row in people if row[2] is not None]
    if chain:
        _, cap, asked_before, next_before = chain[-1]
        asked = asked_before * next_before
        if not asked > 0:  # its target was raised by hand after it stopped: not adaptive now
            return None
    else:  # the comparison's first vote: its cap from its model pair's weight now
        cap, asked = adaptive.vote_cap(weight, k), 1.0
    judge = adaptive.judge_verdict(
        list(
            Vote.objects.filter(
                comparison_id=comparison_id, voter=Vote.Voter.JUDGE, turn__isnull=True
            ).values_list("outcome", flat=True)
        )
    )
    recent = [SCORE[o] for o, *_ in people] + [SCORE[outcome]]
    recent = ([np.nan] * adaptive.SETTLE_VOTES + recent)[-adaptive.SETTLE_VOTES :]
    votes = count + 1
    next_asked = float(
        adaptive.continue_probability(np.array([recent]), np.array([judge]), votes, cap)[0]
    )
    go_on = next_asked > 0 and _random.random() < next_asked
    # Never below this vote (a slot it takes), never above the cap.
    return Decision(cap, asked, next_asked, votes + 1 if go_on else votes)
