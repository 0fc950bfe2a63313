"""Aggregated Bradley-Terry fit vs a per-vote logistic regression, on 1,000,000 simulated votes.

Run from the repository root:  OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ranking.py

The reference is how FastChat's leaderboard once fitted Bradley-Terry: a logistic regression with
one row per vote (+1 for model a, -1 for model b; a tie as two half-weight rows, one won and one
lost), here solved with scipy's L-BFGS on the sparse design. Both fits maximise the same
likelihood (the aggregated one adds a tiny regularisation), so their strengths should agree to a
small fraction of an Elo point; only the cost differs.
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
    rank,
)


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
    args = parser.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("note: set OPENBLAS_NUM_THREADS=1 (as the web and worker processes do)")

    true, a, b, outcome, question = simulate(
        args.votes, args.models, args.questions, args.ties, args.seed
    )
    names = [f"model-{i:02d}" for i in range(args.models)]

    def one_fit():
        # A point fit needs no question ids; the bootstrap below aggregates per question.
        counts = aggregate(a, b, outcome, None, args.models)
        return rank(counts, models=names, bootstrap=0)

    def one_fit_by_question():
        counts = aggregate(a, b, outcome, question, args.models, args.questions)
        return rank(counts, models=names, bootstrap=0)

    def with_bootstrap():
        counts = aggregate(a, b, outcome, question, args.models, args.questions)
        return rank(counts, models=names, bootstrap=args.rounds, seed=args.seed)

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


if __name__ == "__main__":
    main()
