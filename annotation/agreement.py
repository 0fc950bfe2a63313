"""An LLM judge against people on the same study, as LINE reported it: per model pair both
win/tie/loss counts, Cohen's kappa and raw agreement on the comparisons both judged, the
judge's self-consistency when it saw both orders, Kendall's tau of the two strength orders
(``ranking.compare``, the one ``compare_studies`` uses) and the judge's position bias.

Plain module (no Django): it takes the vote rows of each side and their two fits.

How a comparison's outcome is aggregated (people's and the judge's alike): the outcome most
of its votes gave; when two outcomes share the most votes it counts as a tie. For the judge
seen in both orders this is MT-Bench's rule: two agreeing verdicts give that outcome, an
inconsistent pair (one win each way) counts as a tie.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import ranking, reports

OUTCOMES = ("a", "tie", "b")


@dataclass(frozen=True)
class PairSideBySide:
    model_a: str
    model_b: str
    people: tuple[int, int, int]  # wins, ties, losses of model_a, people's votes
    judge: tuple[int, int, int]  # ... the judge's votes


@dataclass(frozen=True)
class Swap:
    """The judge's verdicts on comparisons it saw in both orders, paired one of each order."""

    pairs: int
    consistent: int

    @property
    def rate(self) -> float | None:
        return self.consistent / self.pairs if self.pairs else None


@dataclass(frozen=True)
class JudgeAgreement:
    pairs: list[PairSideBySide]
    compared: int  # comparisons with votes of both sides
    agreed: int  # ... whose aggregated outcomes are the same
    kappa: float | None  # Cohen's kappa of the aggregated outcomes, three classes, a/b-free
    confusion: list[list[int]]  # rows people's outcome, columns the judge's, in OUTCOMES order
    swap: Swap
    kendall_tau: float | None
    tau_p_value: float | None
    position: reports.PositionBias  # the judge's: left_rate is its share of first-shown wins

    @property
    def raw_agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def aggregate(outcomes: Sequence[str]) -> str:
    """The outcome most votes gave; a draw at the top is a tie."""
    counts = Counter(outcomes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def swap_consistency(rows: Sequence[reports.VoteRow]) -> Swap:
    """Per comparison, its verdicts shown a-first paired with those shown b-first (in vote
    order); a pair is consistent when both give the same outcome."""
    by_order: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"a": [], "b": []})
    for row in rows:
        if row.shown_left in ("a", "b"):
            by_order[row.comparison][row.shown_left].append(row.outcome)
    pairs = consistent = 0
    for orders in by_order.values():
        for first, second in zip(orders["a"], orders["b"], strict=False):
            pairs += 1
            consistent += first == second
    return Swap(pairs, consistent)


def judge_agreement(
    people: Sequence[reports.VoteRow],
    judge: Sequence[reports.VoteRow],
    models: Sequence[str],
    people_fit: ranking.Ranking | None,
    judge_fit: ranking.Ranking | None,
) -> JudgeAgreement:
    """People's votes against the judge's on the same study (``models`` fixes each pair's
    model_a, as the results tables do)."""
    tables = [
        {
            (p.model_a, p.model_b): (p.wins, p.ties, p.losses)
            for p in reports.pair_table(rows, models)
        }
        for rows in (people, judge)
    ]
    sides = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            if (a, b) in tables[0] or (a, b) in tables[1]:
                sides.append(
                    PairSideBySide(
                        a, b, tables[0].get((a, b), (0, 0, 0)), tables[1].get((a, b), (0, 0, 0))
                    )
                )
    outcomes = [_by_comparison(rows) for rows in (people, judge)]
    both = sorted(set(outcomes[0]) & set(outcomes[1]))
    confusion = np.zeros((3, 3), dtype=int)
    for comparison in both:
        confusion[
            OUTCOMES.index(outcomes[0][comparison]), OUTCOMES.index(outcomes[1][comparison])
        ] += 1
    kappa = orientation_free_kappa(confusion) if both else None
    tau = p_value = None
    if people_fit is not None and judge_fit is not None:
        compared = ranking.compare(people_fit, judge_fit)
        tau, p_value = compared.kendall_tau, compared.p_value
    return JudgeAgreement(
        pairs=sides,
        compared=len(both),
        agreed=int(np.trace(confusion)),
        kappa=kappa,
        confusion=confusion.tolist(),
        swap=swap_consistency(judge),
        kendall_tau=tau,
        tau_p_value=p_value,
        position=reports.position_bias(judge),
    )


def orientation_free_kappa(confusion: np.ndarray) -> float | None:
    """Cohen's kappa (three classes) of a people-by-judge table, made independent of which
    model a comparison stores as "a": the table plus its mirror (a and b swapped for both
    sides), so the expected agreement no longer depends on how often the stored "a" won. None
    when it is undefined (both sides always gave one and the same class)."""
    table = np.asarray(confusion, dtype=float)
    mirrored = table + table[::-1, ::-1]
    total = mirrored.sum()
    expected = (mirrored.sum(0) * mirrored.sum(1)).sum() / total**2
    if not expected < 1:
        return None
    # statsmodels divides by 1 - p_e, defined here.
    # statsmodels (with pandas) is imported here, on the first kappa, rather than at every
    # Django start: the admin imports this module through the results page.
    from statsmodels.stats.inter_rater import cohens_kappa

    return float(cohens_kappa(mirrored, return_results=False))


def _by_comparison(rows: Sequence[reports.VoteRow]) -> dict[str, str]:
    found: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        found[row.comparison].append(row.outcome)
    return {comparison: aggregate(votes) for comparison, votes in found.items()}


def to_json(found: JudgeAgreement, judges: Sequence[str] = ()) -> dict:
    """The export's and the API's ``judge_agreement``."""
    position = found.position
    return {
        "judges": list(judges),
        "aggregation": "per comparison the outcome most of its votes gave; a draw is a tie",
        "pairs": [
            {
                "model_a": p.model_a,
                "model_b": p.model_b,
                "people": dict(zip(("wins", "ties", "losses"), p.people, strict=True)),
                "judge": dict(zip(("wins", "ties", "losses"), p.judge, strict=True)),
            }
            for p in found.pairs
        ],
        "compared": found.compared,
        "agreed": found.agreed,
        "raw_agreement": found.raw_agreement,
        "cohens_kappa": found.kappa,
        "confusion": {"order": list(OUTCOMES), "people_by_judge": found.confusion},
        "swap": {
            "pairs": found.swap.pairs,
            "consistent": found.swap.consistent,
            "rate": found.swap.rate,
        },
        "kendall_tau": found.kendall_tau,
        "tau_p_value": found.tau_p_value,
        "position_bias": {
            "first_shown_wins": position.left_wins,
            "second_shown_wins": position.right_wins,
            "ties": position.ties,
            "unknown": position.unknown,
            "first_shown_rate": position.left_rate,
            "p_value": position.p_value,
        },
    }
