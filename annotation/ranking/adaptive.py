"""Adaptive K: how many people a comparison asks, decided as its votes come in. One rule for
the live claim (``annotation.loop.adaptive``) and the simulated designs (``ranking.designs``).

Two parts:

- **The cap** of a comparison, fixed when its first vote is cast: ``vote_cap`` of its model
  pair's weight (active sampling's ``pair_weights``, mean 1 over the pairs, floored): K times
  the weight, rounded, between 1 and ``MAX_FACTOR`` x K. Pairs whose order is about to be
  decided get more than K people, clear ones fewer; K is the study-wide mean, so the study's
  human budget (K x comparisons) is spent where the certainty is decided.
- **The stopping rule**: after each vote below the cap, the next person is asked with
  probability ``continue_probability``: ``CONTINUE_WHEN_SETTLED`` once the comparison's last
  ``SETTLE_VOTES`` votes agree with each other and with the judge's consistent verdict (its
  verdicts, both shown orders, all the same and not a tie), else 1. Never 0 below the cap, so
  every vote a comparison could get has a known positive chance of being asked.

Why the fit stays unbiased: a comparison's possible votes are slots 1 .. cap, each a person's
vote drawn independently given the comparison. Slot s is asked with probability
reach_s = the product of the continue probabilities after the votes before it, known when it
is asked (it depends only on earlier votes and the judge). Weighting the vote in slot s by
1 / (cap x reach_s) gives, per comparison, E[sum_s 1{asked_s} / (cap reach_s) l(y_s)]
= (1 / cap) sum_s E[l(y_s)] = E[l(y)] (condition on the votes: the coins that stop a
comparison have expectation reach_s): the comparison counts once, as in the reference
design, whatever the votes and the judge did. The first vote (reach 1) is the comparison's
unconditional audit of the judge; the later ones are adaptive. The cap itself is set from the
study's fit when the first vote comes in, which that vote enters only as one of thousands
(an O(1 / comparisons) effect, not a selection on the comparison's own later votes).
Plain numpy, no Django.
"""

from __future__ import annotations

import numpy as np

CONTINUE_WHEN_SETTLED = 0.25
SETTLE_VOTES = 1  # the last votes that must agree with the judge for a comparison to settle
MAX_FACTOR = 3  # a comparison's cap is at most this many times K


def vote_cap(pair_weight, k: int):
    """People a comparison of a model pair with this weight may ask at most (array or
    scalar): K x weight, rounded, in [1, MAX_FACTOR x K]."""
    cap = np.clip(np.rint(np.asarray(pair_weight, dtype=float) * k), 1, MAX_FACTOR * k)
    return cap.astype(np.int64) if np.ndim(cap) else int(cap)


def settled(recent: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """Per comparison (rows): whether its last ``SETTLE_VOTES`` people's scores (``recent``,
    (n, SETTLE_VOTES), 1 / 0.5 / 0 for model a, NaN where there are fewer votes) all equal the
    judge's consistent verdict (``judge``, 1 or 0; NaN where it has none or gave a tie)."""
    recent = np.asarray(recent, dtype=float).reshape(len(judge), SETTLE_VOTES)
    judge = np.asarray(judge, dtype=float)
    decided = np.isfinite(judge) & (judge != 0.5)
    return decided & (recent == judge[:, None]).all(axis=1)


def continue_probability(recent, judge, count, cap) -> np.ndarray:
    """The chance the next person is asked, per comparison: 0 at the cap, else
    ``CONTINUE_WHEN_SETTLED`` when ``settled``, else 1. ``count``: its votes so far."""
    go_on = np.where(settled(recent, judge), CONTINUE_WHEN_SETTLED, 1.0)
    return np.where(np.asarray(count) >= np.asarray(cap), 0.0, go_on)


def judge_verdict(outcomes) -> float:
    """The judge's consistent verdict from its outcomes on one comparison ("a" / "tie" / "b",
    one per shown order): 1 or 0 when there are two or more and all say the same winner, else
    NaN."""
    found = set(outcomes)
    if len(outcomes) < 2 or len(found) != 1:
        return float("nan")
    return {"a": 1.0, "b": 0.0}.get(found.pop(), float("nan"))
