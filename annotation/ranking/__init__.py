"""Model strengths from pairwise votes (plain package: no Django).

Votes are first aggregated into per-question count matrices (``counts.aggregate``); every fit
works on summed k x k matrices, so its cost does not depend on the number of votes. A tie is half
a win for each side (the Chatbot Arena and Rakuda convention).

- ``bradley_terry`` (default): choix's ``ilsr_pairwise_dense`` on wins + ties/2.
- ``davidson``: Davidson's tie model, P(i wins) = p_i / D, P(tie) = nu * sqrt(p_i p_j) / D with
  D = p_i + p_j + nu * sqrt(p_i p_j), fitted with scipy (choix has none).
- ``position=True`` (Bradley-Terry only): P(shown-first wins) = sigmoid(a + b_first - b_second),
  fitted with scipy; ``a`` is reported in Elo points.
- ``covariates.style_control``: Bradley-Terry with length and Markdown covariates (statsmodels).

Regularisation. Every fit is the plain maximum-likelihood estimate when it exists (the score
graph is strongly connected: ``existence``), and falls back to ``solvers.FALLBACK_ALPHA`` only
when it does not, with a note; each bootstrap resample follows the same rule. choix's ``alpha``
(prior transition rates of the LSR chain) is, at the fixed point, exactly the penalty
``alpha * k * sum(exp(theta) - theta)`` on the log-strengths: it pulls every strength towards
the mean, keeps models that won (or lost) everything finite and ties together groups of models
that never met. The scipy fits use that same penalty (plus a ridge ``alpha * x^2 / 2`` on log nu
or on the advantage), so ``alpha`` means the same for every method.

The modules, by job: ``counts`` (votes -> counts -> win / tie matrices), ``solvers`` (matrices ->
log-strengths), ``existence`` (does the MLE exist), ``intervals`` (bootstrap), ``sandwich``
(covariances, cluster-robust by question), ``summaries`` (rank ranges, settled orders),
``robustness`` (votes that hold the top model up), ``covariates`` (length and style control),
``active`` (active sampling's pair weights), ``simulate`` (simulated studies), ``diagnostics``
(graph checks behind the notes), ``fit`` (``rank``: options, scale, the ``Ranking``),
``comparison`` (two studies), ``options`` (the option names, without numpy). The names below
are the package's interface for the Django layer, the benchmark and the tests.

The package imports a name's module when the name is first used (PEP 562): importing
``annotation.ranking.options``, or the package itself, costs no numpy or scipy, which every
Django process would otherwise load at start-up through the URLs (about 0.7 s each).
"""

import importlib

# Each name of the interface, and the module that defines it.
_WHERE = {
    "covariates": None,  # the submodule itself
    **dict.fromkeys(("PairWinRates", "StudyComparison", "compare"), "comparison"),
    **dict.fromkeys(
        (
            "FIRST_A",
            "FIRST_B",
            "FIRST_UNKNOWN",
            "OUTCOME_A",
            "OUTCOME_B",
            "OUTCOME_TIE",
            "Battle",
            "Counts",
            "aggregate",
        ),
        "counts",
    ),
    **dict.fromkeys(
        ("ELO_MEAN", "ELO_PER_LOG", "ModelStrength", "PairMap", "Ranking", "rank", "rank_arrays"),
        "fit",
    ),
    "METHODS": "options",
    "RESAMPLE": "options",
    "DEFAULT_BOOTSTRAP": "intervals",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_WHERE[name] or name}", __name__)
    value = module if _WHERE[name] is None else getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "covariates",
    "DEFAULT_BOOTSTRAP",
    "ELO_MEAN",
    "ELO_PER_LOG",
    "FIRST_A",
    "FIRST_B",
    "FIRST_UNKNOWN",
    "METHODS",
    "OUTCOME_A",
    "OUTCOME_B",
    "OUTCOME_TIE",
    "RESAMPLE",
    "Battle",
    "Counts",
    "ModelStrength",
    "PairMap",
    "PairWinRates",
    "Ranking",
    "StudyComparison",
    "aggregate",
    "compare",
    "rank",
    "rank_arrays",
]
