"""Simulated judged studies and the designs that spend people's votes on them, for the cost
bench (``bench/ranking.py``) and the tests. Plain numpy, no Django.

The simulated study (people, judge, people's strengths) is ``population.py``.

Each design turns a human-vote budget into votes with known probabilities (``Sample``): the
weight of a vote is 1 / (K pi), K the votes of the reference design (3) and pi the chance it was
asked for. ``fit_sample`` fits it (people alone, or prediction-powered with the judge).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import adaptive
from .active import pair_weights
from .allocation import (  # noqa: F401 - the designs' allocations, read as designs.*
    PLAN_FLOOR,
    SETTLE_LOG,
    oracle_allocation,
    pair_index,
    plan_allocation,
)
from .population import Population, people_votes
from .ppi import PPIFit, fit_ppi

K = 3
DESIGNS = (
    "uniform K=3",
    "uniform K=1",
    "active",
    "routing",
    "prediction-powered",
    "adaptive K",
    "best combination",
    "oracle allocation",
    "best on truth",
    "staged unweighted",
)
# Designs that know the true strengths: limits to read R against, never "the best design";
# and the staged votes fitted people-only and unweighted, unbiased only where Bradley-Terry
# holds pair by pair (as the oracle's fit): what trusting the model would buy, not a design.
KNOWING = ("oracle allocation", "best on truth", "staged unweighted")
UNKNOWN_DESIGN = "unknown design {name!r}: use one of {choices}"
# The K of the simulated adaptive designs: the study-wide mean of the caps. People's votes on
# one comparison share its answers, so one person on more comparisons buys more certainty than
# more people on fewer (the bench's "uniform K=1" row shows how much); the caps still give the
# close pairs' comparisons up to MAX_FACTOR people and the clear ones one.
ADAPTIVE_K = 1
MAX_VOTES = 12  # votes one comparison can get under active sampling's second stage
# The best combination's stages (shares of the human budget): a uniform pilot, then stages
# allocated by ``plan_allocation`` on the fit of everything before them. Chosen on simulated
# studies of seeds other than the bench's (mean of the smallest z of the needed gaps at 3,500
# votes, 200 studies): pilots of 0.1 / 0.2 / 0.3 with one or two later stages differ by a few
# per cent, 0.1 and two stages came out ahead.
STAGES = (0.1, 0.45, 0.45)


@dataclass(frozen=True)
class Sample:
    """People's votes a design asked for: comparison, score for a, weight 1 / (K pi)."""

    comparison: np.ndarray
    score: np.ndarray
    weight: np.ndarray
    uses_judge: bool  # the fit is prediction-powered (the judge's verdicts on everything)
    weighted: bool = True  # False: today's routing fit, every vote counted once

    @property
    def votes(self) -> int:
        return self.comparison.size


def _bernoulli(rng, probability: np.ndarray) -> np.ndarray:
    return np.flatnonzero(rng.random(probability.size) < probability)


def _fixed_k(pop, rng, chosen: np.ndarray, probability: np.ndarray, slots: np.ndarray | int):
    """``slots`` votes on each chosen comparison (drawn with ``probability``), each weighing
    1 / (slots x probability): every comparison counts once in expectation."""
    slots = np.broadcast_to(np.asarray(slots), (pop.size,))
    repeat = slots[chosen]
    comparison = np.repeat(chosen, repeat)
    weight = 1.0 / (slots[comparison] * probability[comparison])
    return comparison, people_votes(pop, comparison, rng), weight


def _adaptive(pop: Population, budget: float, rng, uses_judge: bool, k: int = K) -> Sample:
    """Adaptive K (``ranking.adaptive``, the live claim's rule): comparisons drawn alike, each
    with probability pi, get a first vote; a fit of those (prediction-powered when the judge is
    used) gives each model pair's weight and so each comparison's cap; then each asks more
    people under the stopping rule up to its cap. A vote in slot s weighs
    1 / (cap x pi x reach_s), so every comparison counts once in expectation. pi is set so that
    the votes expected (the caps' mean, less what settled comparisons save) spend ``budget``.
    (Until issue 28's staged design, the best combination was this with the judge and a second
    stage drawn by active sampling's pair weights, the stages averaged: 0.51 of uniform K=3's
    votes on the bench, against ``staged``'s figure there.)"""
    probability = _first_probability(pop, budget, np.ones(pop.size), k)
    chosen = _bernoulli(rng, probability)
    first = people_votes(pop, chosen, rng)
    pilot = fit_sample(pop, Sample(chosen, first, 1.0 / probability[chosen], uses_judge=uses_judge))
    cap = adaptive.vote_cap(_need(pop, pilot), k)
    return Sample(*_chains(pop, rng, chosen, probability, cap, first), uses_judge=uses_judge)


def _first_probability(pop: Population, budget: float, need: np.ndarray, k: int) -> np.ndarray:
    """Each comparison's chance of being drawn, in proportion to ``need`` (at most 1), so that
    the votes expected under the stopping rule spend ``budget``."""
    per = _expected_votes(np.full(pop.size, k), pop)
    rate = need / need.sum() * budget / per
    return np.clip(rate, 1e-6, 1.0)


def _chains(pop, rng, chosen, probability, cap, first=None):
    """People's votes on the ``chosen`` comparisons under the stopping rule up to ``cap``
    (``first``: their first votes, already drawn), each weighing 1 / (cap x pi x reach)."""
    if first is None:
        first = people_votes(pop, chosen, rng)
    judge_says = np.where(pop.consistent, pop.verdicts[:, 0], np.nan)
    out_c, out_y, out_w = [chosen], [first], [1.0 / (cap[chosen] * probability[chosen])]
    alive, reach, recent = chosen, np.ones(chosen.size), first[:, None]
    count = 1
    while alive.size:
        go_on = adaptive.continue_probability(
            recent[:, -adaptive.SETTLE_VOTES :], judge_says[alive], count, cap[alive]
        )
        asked = rng.random(alive.size) < go_on
        reach = (reach * go_on)[asked]
        alive, recent = alive[asked], recent[asked]
        if not alive.size:
            break
        votes = people_votes(pop, alive, rng)
        recent = np.column_stack([recent, votes])
        count += 1
        out_c.append(alive)
        out_y.append(votes)
        out_w.append(1.0 / (cap[alive] * probability[alive] * reach))
    return np.concatenate(out_c), np.concatenate(out_y), np.concatenate(out_w)


def _expected_votes(cap: np.ndarray, pop: Population) -> float:
    """A rough mean of the votes a drawn comparison gets under the stopping rule (half of the
    comparisons settling on the first vote), to size the draw; the bench counts the real ones."""
    settle = 0.5 * pop.consistent.mean()
    return float(np.mean(1 + (cap - 1) * (1 - settle * (1 - adaptive.CONTINUE_WHEN_SETTLED))))


def _routing_probability(pop: Population, budget: float, share: float = 0.2) -> np.ndarray:
    """Routing's chance that people are given a comparison: the audit share of the consistent
    ones and all unsure ones, scaled to the budget (K votes each)."""
    consistent = pop.consistent.sum()
    unsure = pop.size - consistent
    wanted = budget / K
    if wanted <= share * consistent + unsure:
        scale = wanted / (share * consistent + unsure)
        return np.where(pop.consistent, share * scale, scale)
    audit = min(1.0, (wanted - unsure) / max(consistent, 1))
    return np.where(pop.consistent, audit, 1.0)


def _need(pop: Population, fitted: PPIFit) -> np.ndarray:
    """Per comparison, how much its model pair's votes decide the order (active's weights)."""
    if fitted.covariance is None:
        return np.ones(pop.size)
    weights = pair_weights(fitted.theta, fitted.covariance)
    return weights[pop.model_a, pop.model_b]


def _spread(pop, budget_votes: float, need: np.ndarray, base: np.ndarray | None = None):
    """Selection probabilities proportional to ``need`` (x ``base``) spending ``budget_votes``
    votes at K a comparison; where a probability would pass 1 the comparison gets more slots."""
    shape = need * (base if base is not None else 1.0)
    expected = budget_votes / K
    rate = shape / shape.sum() * expected
    slots = np.clip(np.ceil(rate), 1, MAX_VOTES // K).astype(int) * K
    probability = np.clip(rate * K / slots, 1e-6, 1.0)
    return probability, slots


def draw(
    name: str,
    pop: Population,
    budget: float,
    rng: np.random.Generator,
    oracle: np.ndarray | None = None,
) -> Sample:
    """The votes design ``name`` asks people for, ``budget`` of them (in expectation);
    ``oracle``: the pair shares of ``oracle_allocation`` (for "oracle allocation")."""
    if name not in DESIGNS:
        raise ValueError(UNKNOWN_DESIGN.format(name=name, choices=", ".join(DESIGNS)))
    everyone = np.ones(pop.size)
    if name in ("uniform K=3", "uniform K=1"):
        k = K if name == "uniform K=3" else 1
        probability = np.clip(everyone * budget / (k * pop.size), 0, 1)
        chosen = _bernoulli(rng, probability)
        return Sample(*_fixed_k(pop, rng, chosen, probability, k), uses_judge=False)
    if name in ("routing", "prediction-powered"):
        probability = _routing_probability(pop, budget)
        chosen = _bernoulli(rng, probability)
        votes = _fixed_k(pop, rng, chosen, probability, K)
        if name == "routing":  # today's fit: people's votes, unweighted
            return Sample(*votes, uses_judge=False, weighted=False)
        return Sample(*votes, uses_judge=True)
    if name == "oracle allocation":
        return _oracle(pop, budget, rng, oracle)
    if name == "adaptive K":
        return _adaptive(pop, budget, rng, uses_judge=False, k=ADAPTIVE_K)
    if name == "best combination":
        return staged(pop, budget, rng)
    if name == "best on truth":
        return staged(pop, budget, rng, known=pop.target)
    if name == "staged unweighted":
        votes = staged(pop, budget, rng)
        ones = np.ones(votes.votes)
        return Sample(votes.comparison, votes.score, ones, uses_judge=False, weighted=False)
    # Active: two stages, half the budget spread alike, a fit, then the other half where the
    # order is still open. Each stage's estimate is unbiased; the fit averages them (weights
    # halved).
    parts = []
    first_p, first_slots = _spread(pop, budget / 2, everyone)
    chosen = _bernoulli(rng, first_p)
    parts.append(_fixed_k(pop, rng, chosen, first_p, first_slots))
    pilot = fit_sample(pop, Sample(*parts[0], uses_judge=False))
    spent = parts[0][0].size
    second_p, second_slots = _spread(pop, max(budget - spent, K), _need(pop, pilot))
    chosen = _bernoulli(rng, second_p)
    parts.append(_fixed_k(pop, rng, chosen, second_p, second_slots))
    comparison = np.concatenate([p[0] for p in parts])
    score = np.concatenate([p[1] for p in parts])
    weight = np.concatenate([p[2] / 2 for p in parts])
    return Sample(comparison, score, weight, uses_judge=False)


def staged(
    pop: Population,
    budget: float,
    rng: np.random.Generator,
    stages: tuple[float, ...] = STAGES,
    settle: float = SETTLE_LOG,
    known: np.ndarray | None = None,
) -> Sample:
    """The plug-in of the oracle allocation, prediction-powered: stage 1 (a ``stages[0]`` share
    of the budget) asks one person on comparisons drawn alike; each later stage fits everything
    before it (the judge on every comparison plus people) and spends its share by
    ``plan_allocation``, model pair by model pair, over that pair's comparisons (each drawn
    with a known probability p, asking ``slots`` people, more than one only where the pair's
    votes outnumber its comparisons). Every comparison keeps a positive probability at every
    stage (``plan_allocation``'s floor).

    Why it stays unbiased: stage s's votes weigh alpha_s / (slots x p), alpha_s its budget
    share, fixed before the study, so E[sum over a comparison's votes of their weights] =
    sum_s alpha_s = 1 and E[sum_v w_v l(y_v)] = E[l(y)], stage by stage: p and slots of
    stage s depend only on earlier stages' votes, and each vote is a fresh person's (the
    martingale argument of ``ranking.adaptive``). A weight that pooled the stages' chances
    (1 / (sum of p's)) would be narrower but would let a pair's pilot votes set their own
    weight (the pilot decides the later p's); fixed shares never do.

    ``known``: plan on these strengths instead of the fit's (the bench's limit of the plug-in:
    the same design and fit with the allocation's strengths known)."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for s, share in enumerate(stages):
        rate = stage_rate(pop, parts, s, budget, stages=stages, settle=settle, known=known)
        slots, probability = stage_draw(rate)
        chosen = _bernoulli(rng, probability)
        comparison = np.repeat(chosen, slots[chosen])
        weight = stage_weight(share, slots[comparison], probability[comparison])
        parts.append((comparison, people_votes(pop, comparison, rng), weight))
    return Sample(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        uses_judge=True,
    )


@dataclass(frozen=True)
class Comparisons:
    """What the staged design plans on, as a live study has it (``Population`` has it too):
    each comparison's model pair and question, the judge's score for a (NaN: no verdict)."""

    model_a: np.ndarray
    model_b: np.ndarray
    question: np.ndarray
    judge: np.ndarray
    n_models: int

    @property
    def size(self) -> int:
        return self.model_a.size


def stage_rate(
    pop: Population | Comparisons,
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    s: int,
    budget: float,
    stages: tuple[float, ...] = STAGES,
    settle: float = SETTLE_LOG,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """Stage ``s``'s expected people's votes per comparison (``staged``'s plan; the live
    design's, annotation/staging.py, too): stage 0 alike, a later one by ``plan_allocation``
    on the prediction-powered fit of ``parts``, the votes of the stages before it
    (comparison, score, weight ``stage_weight``), spread over each model pair's comparisons."""
    n = pop.size
    stage_budget = stages[s] * budget
    if s == 0:
        return np.full(n, stage_budget / n)
    pair = pair_index(pop)
    members = np.bincount(pair, minlength=pop.n_models * (pop.n_models - 1) // 2)
    done = sum(stages[:s])
    sample = Sample(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]) / done,
        uses_judge=True,
    )
    fitted = fit_sample(pop, sample)
    if known is not None:
        fitted = replace(fitted, theta=known)
    earlier = [np.bincount(pair[p[0]], minlength=members.size).astype(float) for p in parts]
    votes = plan_allocation(
        pop,
        fitted,
        sample,
        stage_budget,
        earlier=[(stages[t], e) for t, e in enumerate(earlier)],
        later=stages[s:],
        settle=settle,
    )
    return (votes / np.maximum(members, 1))[pair]


def stage_draw(rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per comparison, the people a drawn comparison asks (``slots``, more than one only where
    its expected votes pass one) and the chance it is drawn, so slots x p = ``rate``."""
    slots = np.clip(np.ceil(rate), 1, MAX_VOTES).astype(int)
    probability = np.clip(rate / slots, 1e-9, 1.0)
    return slots, probability


def stage_weight(share, slots, probability):
    """A people's vote of a stage with budget ``share``, on a comparison drawn with
    ``probability`` asking ``slots`` people: share / (slots x p) (``staged`` says why this
    keeps the fit unbiased)."""
    return share / (slots * probability)


def _oracle(pop: Population, budget: float, rng, share: np.ndarray) -> Sample:
    """People only, each model pair's share of the budget from ``oracle_allocation`` as a fixed
    count, spread over the pair's comparisons drawn without replacement (one vote each before
    any gets a second). A fixed allocation needs no inverse-probability weights: the fit counts
    every vote once (Bradley-Terry's strengths do not depend on how votes are spread over
    pairs when it holds; the bench measures what little bias that leaves)."""
    k = pop.n_models
    chosen = []
    for i, j in zip(*np.triu_indices(k, 1), strict=True):
        members = np.flatnonzero((pop.model_a == i) & (pop.model_b == j))
        wanted = share[i, j] * budget
        slots = max(1, int(np.ceil(wanted / members.size)))
        count = min(members.size, int(round(wanted / slots)))
        chosen.append(np.repeat(rng.choice(members, count, replace=False), slots))
    comparison = np.concatenate(chosen)
    score = people_votes(pop, comparison, rng)
    return Sample(comparison, score, np.ones(comparison.size), uses_judge=False, weighted=False)


def fit_sample(pop: Population, sample: Sample, lam: float | None = None) -> PPIFit:
    """Fit a design's votes: prediction-powered when it uses the judge (``lam`` None: tuned),
    else people alone, weighted by 1 / (K pi) unless the design is today's routing fit."""
    weight = sample.weight if sample.weighted else np.ones(sample.votes)
    if sample.uses_judge:
        return fit_ppi(
            pop.model_a,
            pop.model_b,
            pop.question,
            pop.judge,
            sample.comparison,
            sample.score,
            weight,
            pop.n_models,
            lam=lam,
        )
    return fit_ppi(
        pop.model_a,
        pop.model_b,
        pop.question,
        np.full(pop.size, np.nan),
        sample.comparison,
        sample.score,
        weight,
        pop.n_models,
        lam=0.0,
    )


def separated(fitted: PPIFit, needed: list[tuple[int, int]]) -> bool:
    """Every needed adjacent pair (u above v in truth) separated at 95 %, in the true order."""
    if fitted.covariance is None or not fitted.converged:
        return False
    for u, v in needed:
        gap = fitted.theta[u] - fitted.theta[v]
        if not gap > 1.959964 * fitted.gap_se(u, v):
            return False
    return True
