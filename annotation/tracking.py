"""A study's results in the experiment tracker (``evalsite.trackers``): the strengths with their
intervals and win / tie / loss per model and per model pair, as one tracker run tagged with the
study. ``results_report`` is plain (fit and tables in, a ``trackers.Report`` out);
``study_results_log`` reads the study as the results page does and writes the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from evalsite import trackers
from evalsite.trackers import Table, metric_key

from . import ranking, reports, results
from .models import Study

NO_FIT = "study {name!r} has no fit to log: no votes yet (counting the votes of: {voters})"
POOLED = (
    "voters=all has no single fit to log (people's and the judge's votes are never added "
    "together); log people's or the judge's"
)
STRENGTH_COLUMNS = [
    "rank",
    "model",
    "strength",
    "ci_low",
    "ci_high",
    "win_rate",
    "wins",
    "ties",
    "losses",
    "games",
]
PAIR_COLUMNS = ["model_a", "model_b", "wins", "ties", "losses", "games", "ties_bothbad"]


def run_name(study_id: int, when: datetime | None = None) -> str:
    """The tracker run's name: the study's id and when (each logging is a run of its own)."""
    when = when or datetime.now(UTC)
    return f"study-{study_id}-{when:%Y%m%d-%H%M%S}"


def results_report(
    *,
    study_id: int,
    study_name: str,
    fitted: ranking.Ranking,
    pairs: Sequence[reports.PairRow],
    options: dict,
    n_votes: int,
    name: str | None = None,
) -> trackers.Report:
    """The tracker's view of a study's fit: per model ``strength``, ``strength_low`` /
    ``strength_high`` (the fit's interval), ``win_rate``, ``wins`` / ``ties`` / ``losses`` /
    ``games``; per pair ``pair_wins`` / ``pair_ties`` / ``pair_losses`` (``"a v.s. b"``); the
    fit's options as parameters; both tables."""
    values: list[tuple[str, float | int | None]] = [
        ("votes", n_votes),
        ("questions", fitted.n_questions),
        ("position_advantage", fitted.position_advantage_elo),
    ]
    for m in fitted.models:
        values += [
            (metric_key("strength", m.name), m.strength),
            (metric_key("strength_low", m.name), m.ci_low),
            (metric_key("strength_high", m.name), m.ci_high),
            (metric_key("win_rate", m.name), m.win_rate),
            (metric_key("wins", m.name), m.wins),
            (metric_key("ties", m.name), m.ties),
            (metric_key("losses", m.name), m.losses),
            (metric_key("games", m.name), m.games),
        ]
    for p in pairs:
        label = p.label()
        values += [
            (metric_key("pair_wins", label), p.wins),
            (metric_key("pair_ties", label), p.ties),
            (metric_key("pair_losses", label), p.losses),
        ]
    params = {
        "study": study_name,
        "study_id": study_id,
        "method": fitted.method,
        "confidence": fitted.confidence,
        "interval_source": fitted.interval_source,
        "bootstrap": fitted.bootstrap,
        "resample": fitted.resample,
        "seed": fitted.seed,
        "position": options.get("position", False),
        "voters": options.get("voters", "people"),
        "turn": options.get("turn"),
    }
    strengths = Table(
        STRENGTH_COLUMNS,
        [
            [i, m.name, m.strength, m.ci_low, m.ci_high, m.win_rate]
            + [m.wins, m.ties, m.losses, m.games]
            for i, m in enumerate(fitted.models, 1)
        ],
    )
    pair_table = Table(
        PAIR_COLUMNS,
        [[p.model_a, p.model_b, p.wins, p.ties, p.losses, p.games, p.ties_bothbad] for p in pairs],
    )
    return trackers.Report(
        name=name or run_name(study_id),
        tags={
            "app": "evalsite",
            "app_run": f"study-{study_id}",
            "study": study_name,
            "study_id": str(study_id),
        },
        params=params,
        metrics=trackers.numbers(values),
        tables={"strengths": strengths, "pairs": pair_table},
    )


def study_results_log(
    *, study: Study, tracker: trackers.Tracker, count_from=(), **options
) -> trackers.Logged:
    """Log the study's fit (``options`` as the results page takes them: the same cached fit)
    to ``tracker``. ValueError: no votes, voters=all, no tracker, or its library missing."""
    problem = trackers.unavailable(tracker.kind) if tracker.enabled else trackers.NO_TRACKER
    if problem:
        raise ValueError(problem)
    if options.get("voters") == "all":
        raise ValueError(POOLED)
    found = results.study_results(study=study, count_from=count_from, **options)
    if found.ranking is None:
        raise ValueError(NO_FIT.format(name=study.name, voters=found.options["voters"]))
    report = results_report(
        study_id=study.pk,
        study_name=study.name,
        fitted=found.ranking,
        pairs=found.pairs,
        options=found.options,
        n_votes=found.n_votes,
    )
    return trackers.log_report(tracker, report)
