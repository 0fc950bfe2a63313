"""Prediction-powered strengths (annotation.ranking.ppi) on simulated judged studies
(annotation.ranking.designs): unbiased for people's strengths when the judge is biased, where
today's routing fit (people's votes on the comparisons routing gave them, unweighted) is not;
narrower than people alone when the judge agrees with people; the plain fits they reduce to."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.ranking import ELO_PER_LOG, aggregate, designs, rank
from annotation.ranking import population as simulated
from annotation.ranking.ppi import BAD_LAMBDA, BAD_VOTE_WEIGHT, fit_ppi

# Six models with the Rakuda v1 GPT-4 tournament's published strengths (its crowded lower half).
RAKUDA_LIKE = np.array([1010.806, 862.585, 848.215, 814.526, 794.771, 703.772])
THETA = (RAKUDA_LIKE - RAKUDA_LIKE.mean()) / ELO_PER_LOG
STUDIES = 120
BUDGET = 1500  # human votes per study, of 100 questions x 15 model pairs


def _errors(calibration, design, lam=None, target=None):
    """Per study, the fit's error against that study's people's strengths (or ``target``:
    people's strengths over all questions) in Elo, and its standard errors."""
    errors, ses = [], []
    for seed in range(STUDIES):
        pop = simulated.population(THETA, 100, calibration, np.random.default_rng(seed))
        sample = designs.draw(design, pop, BUDGET, np.random.default_rng(10_000 + seed))
        fitted = designs.fit_sample(pop, sample, lam=lam)
        errors.append((fitted.theta - (pop.target if target is None else target)) * ELO_PER_LOG)
        ses.append(fitted.se() * ELO_PER_LOG)
    return np.array(errors), np.array(ses)


@pytest.fixture(scope="module")
def biased_judge():
    # The judge leans towards the weakest model: half a unit of answer quality its way.
    return simulated.Calibration(judge_bias=0.5, favoured=5)


@pytest.mark.parametrize("design", ["prediction-powered", "adaptive K", "best combination"])
def test_prediction_powered_strengths_stay_unbiased_under_a_biased_judge(biased_judge, design):
    # Adaptive K stops asking where people agree with the (biased) judge: the recorded chances
    # of asking again keep its strengths unbiased too, with or without the judge in the fit.
    errors, ses = _errors(biased_judge, design)
    bias = errors.mean(axis=0)
    se = errors.std(axis=0, ddof=1) / np.sqrt(STUDIES)
    assert (np.abs(bias) <= 2 * se).all(), (bias, se)


def test_prediction_powered_intervals_cover_peoples_strengths_about_95_percent(biased_judge):
    # The intervals allow for the questions being a sample: they are read against people's
    # strengths over all questions (one study of 20,000).
    everyone = simulated.population(THETA, 20_000, biased_judge, np.random.default_rng(99)).target
    errors, ses = _errors(biased_judge, "prediction-powered", target=everyone)
    coverage = (np.abs(errors) <= 1.96 * ses).mean()
    assert 0.92 <= coverage <= 0.98, coverage


def test_todays_routing_fit_is_biased_under_the_same_judge(biased_judge):
    errors, _ = _errors(biased_judge, "routing")
    # Fitted unweighted on what the judge found hard, the gaps shrink: the gap between the top
    # and the weakest model comes out short by many standard errors.
    gap = errors[:, 0] - errors[:, 5]
    assert gap.mean() < -4 * gap.std(ddof=1) / np.sqrt(STUDIES), gap.mean()


def test_the_judge_alone_is_biased_towards_the_model_it_favours(biased_judge):
    pop = simulated.population(THETA, 400, biased_judge, np.random.default_rng(3))
    judge_only = fit_ppi(pop.model_a, pop.model_b, pop.question, pop.judge, [], [], [], 6, lam=1.0)
    assert (judge_only.theta[5] - pop.target[5]) * ELO_PER_LOG > 10


def test_a_judge_that_agrees_with_people_narrows_the_intervals():
    honest = simulated.Calibration()
    ppi_errors, ppi_se = _errors(honest, "prediction-powered")
    alone_errors, alone_se = _errors(honest, "prediction-powered", lam=0.0)
    assert ppi_se.mean() < 0.9 * alone_se.mean()
    assert ppi_errors.std() < alone_errors.std()


def test_power_tuning_picks_lambda_zero_for_a_judge_that_says_nothing():
    rng = np.random.default_rng(5)
    pop = simulated.population(THETA, 100, simulated.Calibration(), rng)
    sample = designs.draw("prediction-powered", pop, BUDGET, rng)
    coin = rng.choice([0.0, 0.5, 1.0], size=pop.size)  # a judge that flips coins
    fitted = fit_ppi(
        pop.model_a,
        pop.model_b,
        pop.question,
        coin,
        sample.comparison,
        sample.score,
        sample.weight,
        6,
    )
    assert fitted.lam < 0.2


def test_people_alone_with_unit_weights_is_the_plain_bradley_terry_fit():
    rng = np.random.default_rng(7)
    pop = simulated.population(THETA, 60, simulated.Calibration(), rng)
    chosen = rng.integers(0, pop.size, 2000)
    score = simulated.people_votes(pop, chosen, rng)
    fitted = fit_ppi(
        pop.model_a,
        pop.model_b,
        pop.question,
        np.full(pop.size, np.nan),
        chosen,
        score,
        np.ones(chosen.size),
        6,
        lam=0.0,
    )
    outcome = np.where(score == 1, 0, np.where(score == 0.5, 1, 2))
    counts = aggregate(pop.model_a[chosen], pop.model_b[chosen], outcome, pop.question[chosen], 6)
    plain = rank(counts, models=[str(i) for i in range(6)], bootstrap=0)
    expected = np.array([plain.model(str(i)).log_strength for i in range(6)])
    assert np.allclose(fitted.theta, expected, atol=1e-6)
    # The cluster-robust covariance is the one statsmodels gives the same votes.
    order = [int(name) for name in plain.names_fitted]
    assert np.allclose(
        fitted.covariance[np.ix_(order, order)], plain.sandwich_covariance, rtol=1e-4, atol=1e-9
    )


def test_bad_lambda_and_weights_are_refused():
    with pytest.raises(ValueError) as found:
        fit_ppi([0], [1], [0], [1.0], [0], [1.0], [1.0], 2, lam=1.5)
    assert str(found.value) == BAD_LAMBDA.format(lam=1.5)
    with pytest.raises(ValueError) as found:
        fit_ppi([0], [1], [0], [1.0], [0], [1.0], [0.0], 2)
    assert str(found.value) == BAD_VOTE_WEIGHT


def _trace(fitted) -> float:
    return float(np.trace(fitted.covariance))


def test_the_tuned_lambda_is_never_worse_than_people_alone():
    # Small studies with judges from useless (coin flips) to misleading (the opposite of its
    # verdicts): the tuned fit's estimated variance is never above people alone's, and where
    # the tuning's first guess would have been worse the fit is people alone's exactly.
    guarded = 0
    for seed in range(40):
        rng = np.random.default_rng(500 + seed)
        pop = simulated.population(THETA, 12, simulated.Calibration(), rng)
        sample = designs.draw("prediction-powered", pop, 240, rng)
        judge = rng.choice([0.0, 0.5, 1.0], size=pop.size) if seed % 2 else 1.0 - pop.judge
        args = (pop.model_a, pop.model_b, pop.question, judge)
        votes = (sample.comparison, sample.score, sample.weight, 6)
        tuned = fit_ppi(*args, *votes)
        alone = fit_ppi(*args, *votes, lam=0.0)
        if tuned.covariance is None or alone.covariance is None:
            continue
        assert _trace(tuned) <= _trace(alone) * (1 + 1e-9), seed
        first_guess = fit_ppi(*args, *votes, lam=tuned.lam_tuned)
        if first_guess.lam > 0 and _trace(first_guess) >= _trace(alone):
            guarded += 1
            assert tuned.lam == 0.0
            assert np.allclose(tuned.theta, alone.theta)
        else:
            assert tuned.lam == tuned.lam_tuned
    assert guarded >= 1  # the guard was needed at least once here
