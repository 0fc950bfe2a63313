"""Aggregated Bradley-Terry fit vs a per-vote logistic regression, on 1,000,000 simulated votes;
the style-controlled fit at that size; and what active sampling buys in human votes.

Run from the repository root:  OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ranking.py

The reference is how FastChat's leaderboard once fitted Bradley-Terry: a logistic regression with
one row per vote (+1 for model a, -1 for model b; a tie as two half-weight rows, one won and one
lost), here solved with scipy's L-BFGS on the sparse design. Both fits maximise the same
likelihood (the aggregated one is the plain maximum-likelihood fit wherever that exists, as
here), so their strengths should agree to a small fraction of an Elo point; only the cost
differs. The timed fits leave out the sandwich intervals (``sandwich=False``): the contract line
compares the fits themselves, as it always has.

Then the covariate fit (length and Markdown style, statsmodels' GLM clustered by question) on
the same 1,000,000 votes, timed against the plain fit; and simulated studies with strengths like
the Rakuda models' (``ranking.simulate``): votes until every adjacent pair whose true gap is at
least 30 Elo is settled at 95 % (sandwich interval of the gap leaves out zero, in the true
order), under uniform assignment with K = 3 and under active sampling (same K; the first vote of
every comparison first, as the claim does), and the width of the closest pair's interval at a
fixed number of votes. Ratios are medians over seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse, stats
from scipy.optimize import minimize
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotation.ranking import (  # noqa: E402
    ELO_PER_LOG,
    OUTCOME_A,
    OUTCOME_B,
    OUTCOME_TIE,
    aggregate,
    designs,  # noqa: E402
    rank,
)
from annotation.ranking import population as simulated  # noqa: E402
from annotation.ranking.covariates import style_control  # noqa: E402
from annotation.ranking.simulate import simulate_study  # noqa: E402

# The Rakuda v1 GPT-4 tournament's published maximum-likelihood strengths of six models, the
# crowded lower half of that ranking (gaps 148, 14, 34, 20 and 91 Elo: three of them 30 or more).
RAKUDA_LIKE = np.array([1010.806, 862.585, 848.215, 814.526, 794.771, 703.772])
RAKUDA_TIES = 74 / 800  # that tournament's share of ties
SETTLE_GAP = 30.0
# The configuration the tests check the narrower interval in: two close models (40 Elo) far
# from the others, 50 questions, K = 10.
CLOSE_PAIR = np.array([1300.0, 1040.0, 1000.0, 740.0])


def simulate(n_votes: int, n_models: int, n_questions: int, tie_share: float, seed: int):
    """Votes as int32 index arrays (what the Django layer builds from its query)."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0.0, 0.8, n_models)
    a = rng.integers(0, n_models, n_votes, dtype=np.int32)
    b = ((a + rng.integers(1, n_models, n_votes, dtype=np.int32)) % n_models).astype(np.int32)
    a_wins = rng.random(n_votes) < expit(true[a] - true[b])
    outcome = np.where(a_wins, OUTCOME_A, OUTCOME_B).astype(np.int32)
    outcome[rng.random(n_votes) < tie_share] = OUTCOME_TIE
    question = rng.integers(0, n_questions, n_votes, dtype=np.int32)
    return true - true.mean(), a, b, outcome, question


def per_vote_fit(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_models: int) -> np.ndarray:
    """Centred log-strengths by logistic regression with one row per vote (two per tie)."""
    tie = outcome == OUTCOME_TIE
    rows_a = np.concatenate([a, a[tie]])
    rows_b = np.concatenate([b, b[tie]])
    y = np.concatenate([(outcome != OUTCOME_B).astype(float), np.zeros(int(tie.sum()))])
    weight = np.concatenate([np.where(tie, 0.5, 1.0), np.full(int(tie.sum()), 0.5)])
    n_rows = rows_a.size
    row_ids = np.arange(n_rows)
    design = sparse.csr_matrix(
        (
            np.concatenate([np.ones(n_rows), -np.ones(n_rows)]),
            (np.concatenate([row_ids, row_ids]), np.concatenate([rows_a, rows_b])),
        ),
        shape=(n_rows, n_models),
    )
    design_t = design.T.tocsr()
    total = weight.sum()

    def loss(theta):
        z = design @ theta
        # log(1 + e^z) - y z, written to stay finite for large |z|
        value = weight @ (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - y * z)
        grad = design_t @ (weight * (expit(z) - y))
        return value / total, grad / total

    result = minimize(
        loss,
        np.zeros(n_models),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-9, "ftol": 1e-14},
    )
    return result.x - result.x.mean()


def simulated_styles(a, b, question, n_models: int, seed: int):
    """Answer style counts per (question, model) and each vote's pair of them; the comparison
    id of each vote. Lengths vary by model (so length and strength are confounded, as in real
    studies); outcomes were drawn without them, so the fitted length effect should be near 0."""
    rng = np.random.default_rng(seed + 1)
    n_questions = int(question.max()) + 1
    mean_length = rng.lognormal(np.log(400), 0.4, n_models)
    lengths = rng.lognormal(np.log(mean_length)[None, :], 0.3, (n_questions, n_models))
    counts = [rng.poisson(lam, (n_questions, n_models)) for lam in (1.0, 3.0, 1.5)]
    styles = np.stack([lengths, *counts], axis=-1)
    low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    comparison = (question.astype(np.int64) * n_models + low) * n_models + high
    return styles[question, a], styles[question, b], comparison


def settled_after(theta, gaps_needed, sampling: str, seed: int, k_votes: int) -> float:
    """Votes until every needed adjacent pair is settled (inf: not within the study's K)."""
    names = [str(i) for i in range(len(theta))]
    for votes in simulate_study(
        theta,
        n_questions=100,
        votes_per_comparison=k_votes,
        sampling=sampling,
        seed=seed,
        every=100,
        tie_share=RAKUDA_TIES,
    ):
        fitted = rank(votes.counts(), models=names, bootstrap=0)
        if fitted.sandwich_covariance is None or len(fitted.names_fitted) < len(names):
            continue
        index = {name: i for i, name in enumerate(fitted.names_fitted)}
        cov = fitted.sandwich_covariance
        settled = True
        for u, v in gaps_needed:
            i, j = index[str(u)], index[str(v)]
            gap = fitted.model(str(u)).log_strength - fitted.model(str(v)).log_strength
            se = np.sqrt(max(cov[i, i] + cov[j, j] - 2 * cov[i, j], 0.0))
            if not gap > 1.96 * se:
                settled = False
                break
        if settled:
            return float(votes.model_a.size)
    return float("inf")


def closest_width(theta, sampling: str, seed: int, budget: int, n_questions: int, k: int):
    """The sandwich standard error of the closest pair's gap after ``budget`` votes."""
    order = np.argsort(-theta)
    u, v = min(zip(order, order[1:], strict=False), key=lambda p: theta[p[0]] - theta[p[1]])
    names = [str(i) for i in range(len(theta))]
    *_, votes = simulate_study(
        theta,
        n_questions=n_questions,
        votes_per_comparison=k,
        sampling=sampling,
        seed=seed,
        budget=budget,
        every=50,
    )
    fitted = rank(votes.counts(), models=names, bootstrap=0)
    index = {name: i for i, name in enumerate(fitted.names_fitted)}
    cov = fitted.sandwich_covariance
    i, j = index[str(u)], index[str(v)]
    return np.sqrt(cov[i, i] + cov[j, j] - 2 * cov[i, j])


def simulations(seeds: int) -> None:
    theta = (RAKUDA_LIKE - RAKUDA_LIKE.mean()) / ELO_PER_LOG
    needed = [
        (i, i + 1)
        for i in range(len(theta) - 1)
        if RAKUDA_LIKE[i] - RAKUDA_LIKE[i + 1] >= SETTLE_GAP
    ]
    start = time.perf_counter()
    uniform = np.array([settled_after(theta, needed, "uniform", s, 3) for s in range(seeds)])
    active = np.array([settled_after(theta, needed, "active", s, 3) for s in range(seeds)])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = active / uniform
    capacity = 100 * 15 * 3
    print(
        f"votes until every adjacent pair {SETTLE_GAP:.0f}+ Elo apart is settled at 95% "
        f"(6 Rakuda-like models, 100 questions, K = 3, {seeds} seeds): "
        f"uniform median {np.median(uniform):.0f}, active median {np.median(active):.0f}, "
        f"active / uniform {np.nanmedian(ratios):.2f} "
        f"(unsettled within {capacity} votes: uniform {int(np.isinf(uniform).sum())}, "
        f"active {int(np.isinf(active).sum())}; {time.perf_counter() - start:.0f} s)"
    )
    close = (CLOSE_PAIR - CLOSE_PAIR.mean()) / ELO_PER_LOG
    width = np.array(
        [
            closest_width(close, "active", s, 2000, 50, 10)
            / closest_width(close, "uniform", s, 2000, 50, 10)
            for s in range(2 * seeds)
        ]
    )
    # 1,200 votes: under the design's 1,800 (4 models, 100 questions, K = 3), so the two
    # designs differ (at 3,000 both took every vote and the ratio compared a design with itself).
    rakuda = np.array(
        [
            closest_width(theta[[0, 2, 3, 5]], "active", s, 1200, 100, 3)
            / closest_width(theta[[0, 2, 3, 5]], "uniform", s, 1200, 100, 3)
            for s in range(seeds)
        ]
    )
    print(
        "closest pair's interval, active / uniform at the same votes (median over seeds): "
        f"{np.median(width):.3f} (4 models, closest 40 Elo apart, 50 questions, K = 10, 2000 "
        f"votes); {np.median(rakuda):.3f} (4 of the Rakuda-like models, closest 34 Elo apart, "
        "100 questions, K = 3, 1200 votes)"
    )


CERTAINTY_GOAL = 0.80
PEOPLE: dict[bool, np.ndarray] = {}  # people's strengths over all questions (cost_bench)
BUDGET_LADDER = (300, 450, 700, 1000, 1500, 2200, 3300, 5000, 7500, 11000, 16000, 24000, 36000)
SCOUT_STUDIES = 20  # studies per budget in the scouting pass (votes_for_certainty)
POPULATIONS: dict[tuple[int, int], simulated.Population] = {}  # (seed, questions): one study
# Added to every simulated study's seed (--seed-offset): explore on other seeds than the ones
# a figure is reported on.
SEED_OFFSET = [0]


def study(seed: int, theta, questions: int, calibration) -> simulated.Population:
    """Simulated study ``seed`` (the same answers and judge for every design and budget)."""
    key = (seed, questions)
    if key not in POPULATIONS:
        POPULATIONS[key] = simulated.population(
            theta, questions, calibration, np.random.default_rng(seed)
        )
    return POPULATIONS[key]


def design_point(name, theta, needed, budget, studies, questions, calibration, oracle):
    """One design at one human budget over ``studies`` simulated studies (common random
    numbers across designs): certainty, mean human votes, errors against each study's own
    people's strengths (Elo, studies x models: exact, so bias is read without the questions'
    sampling noise) and whether each 95 % interval covered people's strengths over all
    questions (the intervals are for questions drawn from that population)."""
    hits, votes, errors, covered = 0, 0, [], []
    for seed in range(SEED_OFFSET[0], SEED_OFFSET[0] + studies):
        pop = study(seed, theta, questions, calibration)
        sample = designs.draw(name, pop, budget, np.random.default_rng(10**6 + seed), oracle)
        fitted = designs.fit_sample(pop, sample)
        hits += designs.separated(fitted, needed)
        votes += sample.votes
        errors.append((fitted.theta - pop.target) * ELO_PER_LOG)
        wide = np.abs(fitted.theta - PEOPLE[True]) * ELO_PER_LOG
        covered.append(wide <= 1.959964 * fitted.se() * ELO_PER_LOG)
    return hits / studies, votes / studies, np.array(errors), np.array(covered)


def votes_for_certainty(name, theta, needed, studies, questions, calibration, oracle):
    """Human votes at which the design reaches the goal (interpolated between the ladder's
    budgets on a log scale), or None; and the errors and coverage at the budget that reached
    it (else at the largest tried). A scouting pass over ``SCOUT_STUDIES`` studies finds the
    first budget that reaches the goal; the full pass starts two budgets below it (so the
    interpolation's lower budget is measured in full, and a scout that was lucky is caught)."""
    start = 0
    if studies > SCOUT_STUDIES:
        for at, budget in enumerate(BUDGET_LADDER):
            share = design_point(
                name, theta, needed, budget, SCOUT_STUDIES, questions, calibration, oracle
            )[0]
            if share >= CERTAINTY_GOAL:
                start = max(at - 2, 0)
                break
        else:
            start = len(BUDGET_LADDER) - 2
    while True:
        found = _climb(name, theta, needed, studies, questions, calibration, oracle, start)
        if found is not None:
            return found
        start = max(start - 2, 0)  # reached at the first budget measured: start lower


def _climb(name, theta, needed, studies, questions, calibration, oracle, start):
    """Budgets from ``start`` up until the goal is reached (see ``votes_for_certainty``);
    None when it is reached at ``start`` > 0 (the caller starts lower)."""
    previous = None
    for at in range(start, len(BUDGET_LADDER)):
        share, votes, errors, covered = design_point(
            name, theta, needed, BUDGET_LADDER[at], studies, questions, calibration, oracle
        )
        if share >= CERTAINTY_GOAL:
            if previous is None and at > 0:
                return None
            if previous is None or previous[0] >= share:
                return votes, share, errors, covered
            (s0, v0), (s1, v1) = previous, (share, votes)
            t = (CERTAINTY_GOAL - s0) / (s1 - s0)
            return float(np.exp(np.log(v0) + t * (np.log(v1) - np.log(v0)))), share, errors, covered
        previous = (share, votes)
    return None, share, errors, covered


def cost_bench(studies: int, questions: int, only: tuple[str, ...] = designs.DESIGNS) -> None:
    """Human votes each design needs for equal certainty (``designs``); ``only``: these
    designs (uniform K=3, the reference, always)."""
    start = time.perf_counter()
    theta = (RAKUDA_LIKE - RAKUDA_LIKE.mean()) / ELO_PER_LOG
    needed = [
        (i, i + 1)
        for i in range(len(theta) - 1)
        if RAKUDA_LIKE[i] - RAKUDA_LIKE[i + 1] >= SETTLE_GAP
    ]
    calibration = simulated.Calibration()
    # People's strengths over all questions: one study of 20,000 questions.
    PEOPLE[True] = simulated.population(
        theta, 20_000, calibration, np.random.default_rng(99)
    ).target
    figures = simulated.agreement(
        simulated.population(theta, questions, calibration, np.random.default_rng(0)),
        np.random.default_rng(1),
    )
    print(
        f"cost bench: {studies} simulated studies per design and budget, 6 Rakuda-like models, "
        f"{questions} questions; certainty = share of studies in which every adjacent pair "
        f"{SETTLE_GAP:.0f}+ Elo apart is separated at 95% (goal {CERTAINTY_GOAL:.0%}); "
        f"simulated people agree {figures['people_agree']:.0%}, the judge agrees with a person "
        f"{figures['judge_agrees_with_a_person']:.0%}, is consistent under swap "
        f"{figures['judge_consistent']:.0%}, ties {figures['judge_ties']:.0%}"
    )
    oracle = designs.oracle_allocation(theta, needed, 4000.0)
    found = {}
    print("design               | human votes for 80% | / uniform | max |bias| (Elo) | coverage")
    for name in designs.DESIGNS:
        if name not in only and name != "uniform K=3":
            found[name] = None
            continue
        votes, share, errors, covered = votes_for_certainty(
            name, theta, needed, studies, questions, calibration, oracle
        )
        found[name] = votes
        bias = errors.mean(axis=0)
        se = errors.std(axis=0, ddof=1) / np.sqrt(len(errors))
        worst = int(np.argmax(np.abs(bias) / se))
        reached = f"{votes:19.0f}" if votes else f"not reached ({share:.0%})".rjust(19)
        ratio = (
            f"{votes / found['uniform K=3']:9.2f}"
            if votes and found.get("uniform K=3")
            else "        -"
        )
        print(
            f"{name:20s} | {reached} | {ratio} | {bias[worst]:+6.1f} +- {se[worst]:4.1f}    | "
            f"{covered.mean():.1%}"
        )
        biases = " ".join(f"{b:+.1f}" for b in bias)
        ses = " ".join(f"{e:.1f}" for e in se)
        print(f"  {name}: bias per model (Elo) {biases}; its SE {ses}")
    uniform = found["uniform K=3"]
    best = (
        min((v, n) for n, v in found.items() if v and n not in designs.KNOWING)
        if any(found[n] for n in designs.DESIGNS if n not in designs.KNOWING)
        else (None, None)
    )
    r = f"{best[0] / uniform:.2f}" if uniform and best[0] else "n/a"
    limit = (
        f"{found['oracle allocation'] / uniform:.2f}"
        if uniform and found["oracle allocation"]
        else "n/a"
    )
    print(f"human votes for equal certainty, best design / uniform K=3: {r}")
    print(f"human votes for equal certainty, oracle allocation / uniform K=3: {limit}")
    if uniform and found.get("best on truth"):
        print(
            "human votes for equal certainty, best design planned on the true strengths / "
            f"uniform K=3: {found['best on truth'] / uniform:.2f} (the plug-in's limit: "
            "the same stages, weights and fit)"
        )
    if uniform and found.get("staged unweighted"):
        print(
            "human votes for equal certainty, best design's votes fitted people-only and "
            f"unweighted / uniform K=3: {found['staged unweighted'] / uniform:.2f} (unbiased "
            "only where Bradley-Terry holds pair by pair, as the oracle's fit)"
        )
    print(f"(best design: {best[1]}; {time.perf_counter() - start:.0f} s)")
    print(
        f"(studies' seeds {SEED_OFFSET[0]}..{SEED_OFFSET[0] + studies - 1}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})"
    )


def best_time(fn, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--ties", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sim-seeds", type=int, default=20, help="simulated studies per design (0: none)"
    )
    parser.add_argument(
        "--studies",
        type=int,
        default=200,
        help="simulated studies per design and budget in the cost bench (0: skip it)",
    )
    parser.add_argument(
        "--pool-questions", type=int, default=1000, help="questions in each simulated study"
    )
    parser.add_argument(
        "--only-cost", action="store_true", help="run the cost bench alone (no timed fits)"
    )
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="added to the cost bench's study seeds (explore on seeds other than the reported)",
    )
    parser.add_argument(
        "--designs",
        default=",".join(designs.DESIGNS),
        help="the cost bench's designs, comma-separated (uniform K=3 always runs)",
    )
    args = parser.parse_args()
    SEED_OFFSET[0] = args.seed_offset
    only = tuple(name.strip() for name in args.designs.split(","))
    for name in only:
        if name not in designs.DESIGNS:
            parser.error(
                designs.UNKNOWN_DESIGN.format(name=name, choices=", ".join(designs.DESIGNS))
            )
    args.length_effect = 0.0  # outcomes are drawn without style: the fit should find ~0
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("note: set OPENBLAS_NUM_THREADS=1 (as the web and worker processes do)")
    if args.only_cost:
        cost_bench(args.studies, args.pool_questions, only)
        return

    true, a, b, outcome, question = simulate(
        args.votes, args.models, args.questions, args.ties, args.seed
    )
    names = [f"model-{i:02d}" for i in range(args.models)]

    def one_fit():
        # A point fit needs no question ids; the bootstrap below aggregates per question.
        counts = aggregate(a, b, outcome, None, args.models)
        return rank(counts, models=names, bootstrap=0, sandwich=False)

    def one_fit_by_question():
        counts = aggregate(a, b, outcome, question, args.models, args.questions)
        return rank(counts, models=names, bootstrap=0, sandwich=False)

    def with_bootstrap():
        counts = aggregate(a, b, outcome, question, args.models, args.questions)
        return rank(counts, models=names, bootstrap=args.rounds, seed=args.seed, sandwich=False)

    # Best of several runs: the machine is shared, and the minimum is the least noisy estimate.
    fast_time, fast = best_time(one_fit, repeats=20)
    by_question_time, _ = best_time(one_fit_by_question, repeats=10)
    slow_time, slow = best_time(lambda: per_vote_fit(a, b, outcome, args.models), repeats=3)
    boot_time, booted = best_time(with_bootstrap, repeats=1)

    fitted = np.array([fast.model(n).log_strength for n in names])
    diff = float(np.abs(fitted - slow).max() * ELO_PER_LOG)
    rho = stats.spearmanr(fitted, true).statistic
    widths = [m.ci_high - m.ci_low for m in booted.models]
    speedup = slow_time / fast_time

    print(
        f"votes: {args.votes:,} among {args.models} models on {args.questions} questions, "
        f"{(outcome == OUTCOME_TIE).mean():.1%} ties"
    )
    print(f"aggregated fit (aggregation + choix ILSR):        {fast_time * 1e3:8.1f} ms")
    print(f"  the same, aggregated per question:               {by_question_time * 1e3:8.1f} ms")
    print(f"per-vote fit (logistic regression, scipy L-BFGS): {slow_time * 1e3:8.1f} ms")
    print(
        f"aggregated fit + {args.rounds} bootstrap rounds over questions: "
        f"{boot_time * 1e3:.1f} ms (95% intervals {min(widths):.1f}-{max(widths):.1f} Elo wide)"
    )
    print(f"Spearman correlation of fitted and true strengths: {rho:.4f}")
    print(
        f"ranking speedup vs per-vote fit: {speedup:.1f}x, max strength difference: {diff:.3f} Elo"
    )

    styles_a, styles_b, comparison = simulated_styles(a, b, question, args.models, args.seed)

    def covariate_fit():
        return style_control(a, b, outcome, question, comparison, styles_a, styles_b, models=names)

    style_time, styled = best_time(covariate_fit, repeats=2)
    length = next(c for c in styled.coefficients if c.feature == "length")
    print(
        f"covariate (style-controlled) fit, {args.votes:,} votes / {args.models} models: "
        f"{style_time * 1e3:.1f} ms, {style_time / fast_time:.1f}x the plain fit "
        f"(length effect {length.elo:.1f} Elo per SD, planted {args.length_effect:.1f})"
    )
    if args.sim_seeds:
        simulations(args.sim_seeds)
    if args.studies:
        cost_bench(args.studies, args.pool_questions, only)


if __name__ == "__main__":
    main()
