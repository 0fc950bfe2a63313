"""Two rankings of the same models side by side (say human votes against an imported GPT-4
study): Kendall's tau of the strengths and, per model pair, both win rates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from .fit import Ranking


@dataclass(frozen=True)
class PairWinRates:
    model_a: str
    model_b: str
    win_rate_1: float | None  # (wins + ties/2) / games of model_a against model_b, study 1
    win_rate_2: float | None
    games_1: int
    games_2: int


@dataclass(frozen=True)
class StudyComparison:
    models: list[str]  # models in both studies, by strength in the first
    kendall_tau: float | None
    p_value: float | None
    strengths: list[tuple[str, float, float]]  # (name, strength in 1, strength in 2)
    pairs: list[PairWinRates]


def compare(first: Ranking, second: Ranking) -> StudyComparison:
    """Kendall's tau of the strengths of the common models, and per pair both win rates."""
    in_second = set(second.names)
    common = [m.name for m in first.models if m.name in in_second]
    s1 = [first.model(n).strength for n in common]
    s2 = [second.model(n).strength for n in common]
    tau = p = None
    if len(common) >= 2:
        result = stats.kendalltau(s1, s2)
        if not math.isnan(result.statistic):
            tau, p = float(result.statistic), float(result.pvalue)
    pairs = []
    for i, a in enumerate(common):
        for b in common[i + 1 :]:
            rate_1, games_1 = _pair_rate(first, a, b)
            rate_2, games_2 = _pair_rate(second, a, b)
            pairs.append(PairWinRates(a, b, rate_1, rate_2, games_1, games_2))
    return StudyComparison(
        models=common,
        kendall_tau=tau,
        p_value=p,
        strengths=list(zip(common, s1, s2, strict=True)),
        pairs=pairs,
    )


def _pair_rate(ranking: Ranking, a: str, b: str) -> tuple[float | None, int]:
    wins, ties, losses = ranking.pair_counts.get((a, b), (0, 0, 0))
    games = wins + ties + losses
    return ((wins + ties / 2) / games if games else None), games
