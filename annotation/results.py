"""Reads for the results page, the results API and the exports.

Votes leave the database once per request (``study_votes``), as plain ``VoteRow``s; the plain
modules (``reports``, ``ranking``, ``plots``, ``battles``) turn them into tables, strengths,
charts and files. The JSON and Markdown exports are ``results_export``'s.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max, Q
from scipy.stats import norm

from . import agreement, figures, plots, powered, quality, ranking, reports
from .models import AnnotatorExclusion, Study, StudyRun, Vote
from .result_options import (  # noqa: F401 - read as results.* by the views and commands
    BAD_OPTION,
    BAD_TURN,
    RESULT_OPTIONS,
    VOTERS,
    parse_options,
    wants_provenance,
)
from .study_votes import VoteRecord, study_votes

POOLED_COMPARISON = (
    "voters=all is not offered when comparing studies: people's and the judge's votes are "
    "never added together; read the prediction-powered strengths on each study's results page"
)
# The results page and the chart it embeds (requested right after it) share one fit through the
# cache, the per-category fits stored beside it under the same key. The key names the votes
# fitted (count and newest id: votes are only added or deleted, never edited), the study's
# models and the options, so a new vote makes a new key and nothing needs invalidating; the
# timeout only bounds how long an unused fit holds memory.
FIT_CACHE_SECONDS = 600
NO_VOTES_TO_COMPARE = "study {name!r} has no votes yet (counting the votes of: {voters})"


@dataclass
class Results:
    study: Study
    models: list[str]
    rows: list[reports.VoteRow]
    pairs: list[reports.PairRow]
    categories: dict[str, list[reports.PairRow]]
    ranking: ranking.Ranking | None
    position: reports.PositionBias
    annotators: list[reports.AnnotatorRow]
    agreement: reports.Agreement
    options: dict = field(default_factory=dict)
    # Per annotator: time on task, gold accuracy, skips, exclusion (all their votes, counted
    # or not: quality.annotator_quality).
    quality: list = field(default_factory=list)
    # What each row counts for in the fit (active sampling), the style-controlled fit (when
    # asked for) and a fit per question category (figures).
    weights: list[float] = field(default_factory=list)
    style: ranking.covariates.StyleControl | None = None
    category_rankings: dict[str, ranking.Ranking] = field(default_factory=dict)
    # People's, the judge's and prediction-powered strengths side by side, with the design and
    # the audit (``powered``); with voters=all the prediction-powered one is the study's fit.
    combined: powered.Combined | None = None

    @property
    def n_votes(self) -> int:
        return len(self.rows)


def study_models(*, study: Study, count_from=()) -> list[str]:
    """Model labels in the study's canonical order (by run id), which fixes each pair's model_a;
    the models named in ``count_from`` (labels or names) come first, in that order, so that
    their pairs are counted from their side."""
    labels = study_labels(study=study)
    order = list(labels.values())
    chosen = [labels.get(name, name) for name in count_from]
    unknown = [name for name in chosen if name not in order]
    if unknown:
        raise ValueError(BAD_OPTION.format(name="from", value=unknown[0], choices=", ".join(order)))
    return list(dict.fromkeys([*chosen, *order]))


def study_labels(*, study: Study) -> dict[str, str]:
    """Model name -> what results call it (its display label; the name when blank, or when two
    models of the study share a label)."""
    found = list(
        StudyRun.objects.filter(study=study)
        .order_by("run_id")
        .values_list("model__name", "model__display_label")
    )
    labels = [label or name for name, label in found]
    return {
        name: label if labels.count(label) == 1 else name
        for (name, _), label in zip(found, labels, strict=True)
    }


@dataclass(frozen=True)
class Truncation:
    model: str  # as results call it (study_labels)
    truncated: int  # answers that hit the length limit ...
    answers: int  # ... of this many of the model's answers in the study (every turn)


def study_truncation(*, study: Study) -> list[Truncation]:
    """Per study model, how many of its answers were cut off by the length limit."""
    labels = study_labels(study=study)
    found = (
        StudyRun.objects.filter(study=study)
        .order_by("run_id")
        .values_list("model__name")
        .annotate(
            answers=Count("run__answers"),
            truncated=Count("run__answers", filter=Q(run__answers__truncated=True)),
        )
    )
    return [
        Truncation(model=labels.get(name, name), truncated=truncated, answers=answers)
        for name, answers, truncated in found
    ]


def counted_votes(study: Study, voters: str = "people", turn: int | None = None):
    """The votes that count: never a gold check's, never an excluded annotator's; only
    ``voters``' (``VOTERS``; ``all``: both kinds); the whole conversation's unless ``turn``
    (votes on the conversation up to that user turn of longer questions, ``Vote.turn``)."""
    if voters not in VOTERS:
        raise ValueError(BAD_OPTION.format(name="voters", value=voters, choices=", ".join(VOTERS)))
    excluded = AnnotatorExclusion.objects.filter(study=study).values("annotator_id")
    found = Vote.objects.filter(comparison__study=study, comparison__gold=False, turn=turn).exclude(
        annotator_id__in=excluded
    )
    return found if voters == "all" else found.filter(voter=voters)


def counted_vote_objects(study: Study, voters: str = "people", turn: int | None = None):
    return (
        counted_votes(study, voters, turn)
        .select_related(
            "comparison__question",
            "comparison__run_a__model",
            "comparison__run_b__model",
            "assignment",
        )
        .order_by("pk")
    )


def _vote_rows(
    study: Study,
    voters: str = "people",
    turn: int | None = None,
    *,
    comparisons: set[int] | None = None,
    design_only: bool = False,
) -> tuple[list[reports.VoteRow], tuple, list[float]]:
    """The study's counted votes (on ``comparisons`` only, when given; with ``design_only`` only
    the judge votes the study's people design rests on) as rows, what the fit cache keys them
    by (``_vote_count``), and what each counts for in the fit."""
    votes = study_votes(study)
    found = votes.counted(voters, turn)
    if comparisons is not None:
        found = [r for r in found if r.comparison_id in comparisons]
    if design_only:
        found = [r for r in found if r.in_design]
    labels = study_labels(study=study)
    names = quality.annotator_names(study=study)
    rows = [
        reports.VoteRow(
            comparison=str(r.comparison_id),
            question=str(r.question_id),
            category=r.category,
            model_a=labels[r.model_a],
            model_b=labels[r.model_b],
            outcome=r.outcome,
            shown_left=r.shown_first,
            annotator=_annotator(r, names),
            both_bad=r.tie_kind == Vote.TieKind.BOTH_BAD,
        )
        for r in found
    ]
    newest = found[-1].pk if found else None  # read in id order
    return rows, (len(rows), newest, votes.excluded_key), [r.weight for r in found]


def study_vote_rows(
    *,
    study: Study,
    voters: str = "people",
    turn: int | None = None,
    comparisons: set[int] | None = None,
    design_only: bool = False,
) -> tuple[list[reports.VoteRow], list[float]]:
    """The counted votes (``voters``'; on ``comparisons`` only when given; ``design_only``: the
    judge votes the study's people design rests on) as rows, and what each counts for."""
    rows, _, weights = _vote_rows(
        study, voters, turn, comparisons=comparisons, design_only=design_only
    )
    return rows, weights


def _annotator(record: VoteRecord, names: dict[int, str]) -> str:
    """Who cast the vote, as every table of the results calls them (``quality.annotator_names``)."""
    if record.annotator_id is not None:
        return names.get(record.annotator_id, quality.numbered(record.annotator_id))
    return f"judge {record.judge}" if record.judge else "imported"


def fit_options(
    *,
    method: str = "bradley_terry",
    bootstrap: int = ranking.DEFAULT_BOOTSTRAP,
    resample: str = "question",
    seed: int = 0,
    position: bool = False,
    style_control: bool = False,
    voters: str = "people",
    turn: int | None = None,
) -> dict:
    """Every fit option, defaults filled in (``parse_options`` gives only those it was given)."""
    return {
        "method": method,
        "bootstrap": bootstrap,
        "resample": resample,
        "seed": seed,
        "position": position,
        "style_control": style_control,
        "voters": voters,
        "turn": turn,
    }


def study_results(*, study: Study, count_from=(), **options) -> Results:
    """Tables and the fit of the study's votes; ``options`` as ``fit_options`` takes them;
    ``count_from``: models whose pairs are counted from their side (``study_models``)."""
    options = fit_options(**options)
    models = study_models(study=study, count_from=count_from)
    pooled = options["voters"] == "all"
    # Both kinds combined is the prediction-powered fit: the tables are people's votes, the
    # strengths the judge's corrected by people's; no fit ever adds the two kinds of votes.
    whose = "people" if pooled else options["voters"]
    rows, votes, weights = _vote_rows(study, whose, options["turn"])
    fit_models = study_models(study=study)
    found = None
    if rows and not pooled:
        found = _fitted(study, models, options, votes, rows, weights, categories_of=fit_models)
    return Results(
        study=study,
        models=models,
        rows=rows,
        pairs=reports.pair_table(rows, models),
        categories=reports.category_tables(rows, models),
        ranking=found.main if found else None,
        position=position_by_question(rows),
        annotators=reports.annotator_table(rows),
        agreement=reports.agreement(rows),
        options=options,
        quality=quality.annotator_quality(study=study),
        weights=weights,
        style=figures.style_fit(rows, weights, fit_models, options)
        if options["style_control"] and not pooled
        else None,
        category_rankings=(found.categories or {}) if found else {},
        combined=study_combined(study=study, turn=options["turn"]),
    )


def study_combined(*, study: Study, turn: int | None = None) -> powered.Combined:
    """People's, the judge's and prediction-powered strengths of the study (``powered``)."""
    votes = study_votes(study)
    return powered.study_combined(
        study=study,
        models=study_models(study=study),
        labels=study_labels(study=study),
        people=[
            (r.comparison_id, r.outcome, r.cap, r.asked, r.share)
            for r in votes.counted("people", turn)
        ],
        judge=[(r.comparison_id, r.outcome) for r in votes.counted("judge", turn) if r.in_design],
        design=votes.design,
    )


def position_by_question(rows: list[reports.VoteRow]) -> reports.PositionBias:
    """``reports.position_bias`` with its p-value from a test by question: votes on one
    question are alike, so the left-minus-right wins are summed per question and the two-sided
    z-test uses their spread across questions (a cluster-robust score test) instead of a
    binomial test of independent votes."""
    found = reports.position_bias(rows)
    per_question: dict[str, float] = {}
    for row in rows:
        if row.shown_left is None or row.outcome == "tie":
            continue
        step = 1.0 if row.outcome == row.shown_left else -1.0
        per_question[row.question] = per_question.get(row.question, 0.0) + step
    if found.p_value is None or len(per_question) < 2:
        return found
    sums = np.array(list(per_question.values()))
    spread = math.sqrt(float((sums**2).sum()))
    p_value = 1.0 if spread == 0 else float(2 * norm.sf(abs(sums.sum()) / spread))
    return replace(found, p_value=p_value)


def study_ranking(*, study: Study, **options) -> ranking.Ranking | None:
    """The fit ``study_results`` makes, without the tables: the one the results page has just
    cached when the page's chart asks for it, else a fresh fit (None without votes)."""
    options = fit_options(**options)
    if options["voters"] == "all":  # no fit adds the two kinds: the page's own table says it
        return None
    models = study_models(study=study)
    votes = _vote_count(study, options["voters"], options["turn"])
    found = _fitted(study, models, options, votes) if votes[0] else None
    return found.main if found else None


def fit_cache_key(*, study: Study, options: dict) -> str:
    """Where the fit of the study's current votes with these (complete) options is cached."""
    return _fit_key(
        study,
        study_models(study=study),
        options,
        _vote_count(study, options["voters"], options["turn"]),
    )


def _vote_count(study: Study, voters: str = "people", turn: int | None = None) -> tuple:
    """(count, newest id, who is excluded) of the counted votes: votes are only added or
    deleted, never edited, so this names the set (excluding someone changes the third; the
    voters and the turn are among the options, also in the key)."""
    found = counted_votes(study, voters, turn).aggregate(n=Count("pk"), newest=Max("pk"))
    return found["n"], found["newest"], _excluded_key(study)


def _excluded_key(study: Study) -> str:
    excluded = AnnotatorExclusion.objects.filter(study=study).order_by("annotator_id")
    return "-".join(str(pk) for pk in excluded.values_list("annotator_id", flat=True)) or "none"


def _fit_key(study: Study, models: list[str], options: dict, votes: tuple) -> str:
    models_digest = hashlib.sha256("\n".join(models).encode()).hexdigest()[:16]
    fields = [study.pk, *votes, *(options[name] for name in sorted(options)), models_digest]
    return "annotation:study-fit:" + ":".join(str(value) for value in fields)


@dataclass(frozen=True)
class StudyFit:
    """What the fit cache holds: the main fit, and the per-category fits once a results page
    has asked for them (None until then; {} with fewer than two categories)."""

    main: ranking.Ranking
    categories: dict[str, ranking.Ranking] | None = None


def _fitted(
    study: Study,
    models: list[str],
    options: dict,
    votes: tuple,
    rows: list[reports.VoteRow] | None = None,
    weights: list[float] | None = None,
    categories_of: list[str] | None = None,
) -> StudyFit | None:
    """The cached fit of these votes, or a fresh one (then cached); with ``categories_of``
    (the models in the study's order) the per-category fits too, cached with it. Without
    ``rows`` a miss reads them, and keys the fit by what it read."""
    key = _fit_key(study, models, options, votes)
    found = cache.get(key)
    if found is not None and (categories_of is None or found.categories is not None):
        return found
    if rows is None:
        rows, votes, weights = _vote_rows(study, options["voters"], options["turn"])
        if not rows:
            return None
        key = _fit_key(study, models, options, votes)
    main = found.main if found is not None else None
    if main is None:
        main = ranking.rank(
            figures.battles(rows, weights, options["position"]),
            models=models,
            robustness=True,
            **{
                name: value
                for name, value in options.items()
                if name not in ("style_control", "voters", "turn")
            },
        )
    categories = None
    if categories_of is not None:
        categories = figures.category_strengths(rows, weights, categories_of, options)
    found = StudyFit(main=main, categories=categories)
    cache.set(key, found, FIT_CACHE_SECONDS)
    return found


def strength_chart(*, study: Study, fitted: ranking.Ranking, fmt: str) -> bytes:
    return plots.strength_chart(fitted, fmt=fmt, title=study.name)


def studies_compare(
    *, first: Study, second: Study, bootstrap: int = 0, voters: tuple[str, str] = ("people",) * 2
) -> dict:
    """Two studies over the same models (say human votes against an imported GPT-4 study),
    each read for its ``voters``: Kendall's tau of the strengths, both strengths, and per model
    pair both win rates (``ranking.compare``, as the judge agreement's tau)."""
    if "all" in voters:
        raise ValueError(POOLED_COMPARISON)
    rankings = []
    for study, whose in zip((first, second), voters, strict=True):
        found = study_results(study=study, bootstrap=bootstrap, voters=whose)
        if found.ranking is None:
            raise ValueError(NO_VOTES_TO_COMPARE.format(name=study.name, voters=whose))
        rankings.append(found.ranking)
    compared = ranking.compare(*rankings)
    return {
        "first": first.name,
        "second": second.name,
        "voters_first": voters[0],
        "voters_second": voters[1],
        "models": compared.models,
        "kendall_tau": compared.kendall_tau,
        "p_value": compared.p_value,
        "strengths": [
            {"name": name, "strength_first": s1, "strength_second": s2}
            for name, s1, s2 in compared.strengths
        ],
        "pairs": [
            {
                "model_a": p.model_a,
                "model_b": p.model_b,
                "win_rate_first": p.win_rate_1,
                "win_rate_second": p.win_rate_2,
                "games_first": p.games_1,
                "games_second": p.games_2,
            }
            for p in compared.pairs
        ],
    }


def judge_agreement(*, study: Study) -> agreement.JudgeAgreement | None:
    """People against the LLM judge on this study (``agreement``); None unless both voted."""
    votes = study_votes(study)
    if not (votes.counted("judge") and votes.counted("people")):
        return None
    models = study_models(study=study)
    sides = []
    for voters in ("people", "judge"):
        options = fit_options(bootstrap=0, voters=voters)
        rows, counted, weights = _vote_rows(study, voters)
        found = _fitted(study, models, options, counted, rows, weights)
        sides.append((rows, found.main if found else None))
    return agreement.judge_agreement(sides[0][0], sides[1][0], models, sides[0][1], sides[1][1])


def study_judge_agreement(*, study: Study) -> dict | None:
    """``judge_agreement`` as the export and the API give it."""
    found = judge_agreement(study=study)
    if found is None:
        return None
    judges = sorted({r.judge for r in study_votes(study).counted("judge")})
    return agreement.to_json(found, judges=judges)
