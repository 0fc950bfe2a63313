"""A simulated judged study, for the cost bench's designs (``designs.py``) and the tests. Plain
numpy, no Django.

A study is every model pair on every question. Each answer has a quality: its model's strength
plus the answer's own deviation (``spread``), which people and the judge both react to, as they
do in real studies (that shared reaction is what biases a fit of people's votes on the
comparisons the judge found hard). People vote Bradley-Terry on the two answers' qualities, with
ties; the judge sees each comparison in both orders, with its own sharpness, noise, a pull
towards the answer shown first, ties, and optionally a bias towards one model.

People's strengths (``Population.target``) are the Bradley-Terry fit to people's expected
scores with every comparison counted once: what infinitely many people's votes on this study's
answers would give, the quantity every design's estimate is judged against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .ppi import fit_ppi


@dataclass(frozen=True)
class Calibration:
    """How people and the judge behave (logits). The defaults were tuned so that on Rakuda-like
    strengths the simulated judge is consistent under swap about 82 % of the time, gives about
    9 % ties and agrees with a single person about as often as two people agree (``agreement``
    prints the figures)."""

    spread: float = 1.5  # sd of an answer's quality around its model's strength
    people_ties: float = 0.09
    judge_sharpness: float = 6.0  # the judge's logit per unit of quality difference
    judge_noise: float = 0.6  # the judge's own view of a comparison (both orders share it)
    judge_position: float = 0.35  # pull towards the answer shown first
    judge_ties: float = 0.09
    judge_bias: float = 0.0  # pull towards model ``favoured`` (quality units)
    favoured: int = 0
    # Answers that vary around their model pull people's expected scores towards 1/2, so the
    # strengths given are multiplied by this before answers are drawn: people's strengths then
    # come out close to the ones given (measured on 4,000 questions: 0.53 without it).
    scale: float = 1.87


@dataclass(frozen=True)
class Population:
    model_a: np.ndarray  # (C,)
    model_b: np.ndarray
    question: np.ndarray
    people_p: np.ndarray  # P(a wins | no tie) for a person
    people_ties: float
    judge: np.ndarray  # the judge's score for a (mean of its two orders' verdicts)
    verdicts: np.ndarray  # (C, 2): a shown first, b shown first
    consistent: np.ndarray  # bool (C,): both orders gave the same verdict
    target: np.ndarray  # people's strengths, centred log
    n_models: int
    n_questions: int

    @property
    def size(self) -> int:
        return self.model_a.size

    def expected(self) -> np.ndarray:
        return (1 - self.people_ties) * self.people_p + self.people_ties / 2


def population(
    strengths: np.ndarray, n_questions: int, calibration: Calibration, rng: np.random.Generator
) -> Population:
    """One simulated study: answers, the judge's verdicts on every comparison, people's
    expected votes and their strengths."""
    k = strengths.size
    first, second = np.triu_indices(k, 1)
    n_pairs = first.size
    a = np.tile(first, n_questions)
    b = np.tile(second, n_questions)
    q = np.repeat(np.arange(n_questions), n_pairs)
    quality = calibration.scale * strengths[None, :] + calibration.spread * rng.standard_normal(
        (n_questions, k)
    )
    delta = quality[q, a] - quality[q, b]
    c = calibration
    lean = c.judge_bias * ((a == c.favoured).astype(float) - (b == c.favoured))
    view = c.judge_sharpness * (delta + lean + c.judge_noise * rng.standard_normal(delta.size))
    verdicts = np.empty((delta.size, 2))
    for column, sign in ((0, 1.0), (1, -1.0)):
        win = rng.random(delta.size) < expit(view + sign * c.judge_position)
        tie = rng.random(delta.size) < c.judge_ties
        verdicts[:, column] = np.where(tie, 0.5, win.astype(float))
    people_p = expit(delta)
    expected = (1 - c.people_ties) * people_p + c.people_ties / 2
    truth = fit_ppi(
        a,
        b,
        q,
        np.full(a.size, np.nan),
        np.arange(a.size),
        expected,
        np.ones(a.size),
        k,
        lam=0.0,
        covariance=False,
    )
    return Population(
        a,
        b,
        q,
        people_p,
        c.people_ties,
        verdicts.mean(axis=1),
        verdicts,
        verdicts[:, 0] == verdicts[:, 1],
        truth.theta,
        k,
        n_questions,
    )


def people_votes(pop: Population, comparisons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One person's score for model a on each of ``comparisons`` (1, 0.5, 0)."""
    tie = rng.random(comparisons.size) < pop.people_ties
    win = rng.random(comparisons.size) < pop.people_p[comparisons]
    return np.where(tie, 0.5, win.astype(float))


def agreement(pop: Population, rng: np.random.Generator) -> dict[str, float]:
    """The calibration figures: two people agreeing, the judge's outcome (a tie when its orders
    disagree) agreeing with one person, the judge's consistency under swap, its tie share."""
    everything = np.arange(pop.size)
    one, two = people_votes(pop, everything, rng), people_votes(pop, everything, rng)
    judge_outcome = np.where(pop.consistent, pop.verdicts[:, 0], 0.5)
    return {
        "people_agree": float((one == two).mean()),
        "judge_agrees_with_a_person": float((judge_outcome == one).mean()),
        "judge_consistent": float(pop.consistent.mean()),
        "judge_ties": float((pop.verdicts == 0.5).mean()),
        "people_ties": float((one == 0.5).mean()),
    }
