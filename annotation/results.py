"""Reads for the results page, the results API and the exports.

Votes leave the database once, as plain ``VoteRow``s; the plain modules (``reports``,
``ranking``, ``plots``, ``battles``) turn them into tables, strengths, charts and files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Count, Max

from . import battles, plots, ranking, reports
from .models import Study, StudyRun, Vote

EXPORT_FORMATS = ("csv", "json", "md", "battles", "votes", "strengths")
UNKNOWN_EXPORT = "unknown export format {fmt!r}; use one of: " + ", ".join(EXPORT_FORMATS)
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "strengths": "text/csv; charset=utf-8",
    "votes": "text/csv; charset=utf-8",
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "battles": "application/x-ndjson; charset=utf-8",
}
EXTENSIONS = {"csv": "pairs.csv", "strengths": "strengths.csv", "votes": "votes.csv"}
EXTENSIONS |= {"json": "results.json", "md": "results.md", "battles": "battles.jsonl"}
VOTE_COLUMNS = (
    "vote_id",
    "question_position",
    "question_id",
    "category",
    "question",
    "model_a",
    "model_b",
    "outcome",
    "winner",
    "shown",
    "left_model",
    "annotator_id",
    "judge",
    "imported",
    "time",
    "seconds",
    "comment",
)


RESULT_OPTIONS = {"method": ranking.METHODS, "resample": ranking.RESAMPLE}
BAD_OPTION = "unknown {name} {value!r}; use one of: {choices}"
# The results page and the chart it embeds (requested right after it) share one fit through the
# cache. The key names the votes fitted (count and newest id: votes are only added or deleted,
# never edited), the study's models and the options, so a new vote makes a new key and nothing
# needs invalidating; the timeout only bounds how long an unused fit holds memory.
FIT_CACHE_SECONDS = 600


def parse_options(params) -> dict:
    """Fit options from a query string (?method=davidson&resample=vote&position=1)."""
    options = {}
    for name, choices in RESULT_OPTIONS.items():
        value = params.get(name)
        if value:
            if value not in choices:
                raise ValueError(
                    BAD_OPTION.format(name=name, value=value, choices=", ".join(choices))
                )
            options[name] = value
    if params.get("position") in ("1", "true", "yes"):
        options["position"] = True
        options["method"] = "bradley_terry"
    return options


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

    @property
    def n_votes(self) -> int:
        return len(self.rows)


def study_models(*, study: Study) -> list[str]:
    """Model names in the study's canonical order (by run id), which fixes each pair's model_a."""
    return list(
        StudyRun.objects.filter(study=study)
        .order_by("run_id")
        .values_list("model__name", flat=True)
    )


def _votes(study: Study):
    return (
        Vote.objects.filter(comparison__study=study)
        .select_related(
            "comparison__question",
            "comparison__run_a__model",
            "comparison__run_b__model",
            "assignment",
        )
        .order_by("pk")
    )


def _vote_rows(study: Study) -> tuple[list[reports.VoteRow], tuple[int, int | None]]:
    """The study's votes as rows, and (count, newest id): what the fit cache keys them by."""
    rows, newest = [], None
    for vote in _votes(study):
        comparison = vote.comparison
        rows.append(
            reports.VoteRow(
                comparison=str(comparison.pk),
                question=str(comparison.question_id),
                category=comparison.question.category,
                model_a=comparison.run_a.model.name,
                model_b=comparison.run_b.model.name,
                outcome=vote.outcome,
                shown_left=vote.assignment.left if vote.assignment_id else None,
                annotator=_annotator(vote),
            )
        )
        newest = vote.pk  # ordered by pk
    return rows, (len(rows), newest)


def _annotator(vote: Vote) -> str:
    if vote.annotator_id:
        return f"user {vote.annotator_id}"
    return f"judge {vote.judge}" if vote.judge else "imported"


def fit_options(
    *,
    method: str = "bradley_terry",
    bootstrap: int = ranking.DEFAULT_BOOTSTRAP,
    resample: str = "question",
    seed: int = 0,
    position: bool = False,
) -> dict:
    """Every fit option, defaults filled in (``parse_options`` gives only those it was given)."""
    return {
        "method": method,
        "bootstrap": bootstrap,
        "resample": resample,
        "seed": seed,
        "position": position,
    }


def study_results(*, study: Study, **options) -> Results:
    """Tables and the fit of the study's votes; ``options`` as ``fit_options`` takes them."""
    options = fit_options(**options)
    models = study_models(study=study)
    rows, votes = _vote_rows(study)
    return Results(
        study=study,
        models=models,
        rows=rows,
        pairs=reports.pair_table(rows, models),
        categories=reports.category_tables(rows, models),
        ranking=_fitted(study, models, options, votes, rows) if rows else None,
        position=reports.position_bias(rows),
        annotators=reports.annotator_table(rows),
        agreement=reports.agreement(rows),
        options=options,
    )


def study_ranking(*, study: Study, **options) -> ranking.Ranking | None:
    """The fit ``study_results`` makes, without the tables: the one the results page has just
    cached when the page's chart asks for it, else a fresh fit (None without votes)."""
    options = fit_options(**options)
    models = study_models(study=study)
    votes = _vote_count(study)
    return _fitted(study, models, options, votes) if votes[0] else None


def fit_cache_key(*, study: Study, options: dict) -> str:
    """Where the fit of the study's current votes with these (complete) options is cached."""
    return _fit_key(study, study_models(study=study), options, _vote_count(study))


def _vote_count(study: Study) -> tuple[int, int | None]:
    found = Vote.objects.filter(comparison__study=study).aggregate(n=Count("pk"), newest=Max("pk"))
    return found["n"], found["newest"]


def _fit_key(study: Study, models: list[str], options: dict, votes: tuple) -> str:
    models_digest = hashlib.sha256("\n".join(models).encode()).hexdigest()[:16]
    fields = [study.pk, *votes, *(options[name] for name in sorted(options)), models_digest]
    return "annotation:study-fit:" + ":".join(str(value) for value in fields)


def _fitted(
    study: Study,
    models: list[str],
    options: dict,
    votes: tuple,
    rows: list[reports.VoteRow] | None = None,
) -> ranking.Ranking | None:
    """The cached fit of these votes, or a fresh one (then cached). Without ``rows`` a miss
    reads them, and keys the fit by what it read (votes may have changed since ``votes``)."""
    fitted = cache.get(_fit_key(study, models, options, votes))
    if fitted is None:
        if rows is None:
            rows, votes = _vote_rows(study)
            if not rows:
                return None
        fitted = ranking.rank(_battles(rows, options["position"]), models=models, **options)
        cache.set(_fit_key(study, models, options, votes), fitted, FIT_CACHE_SECONDS)
    return fitted


def _battles(rows: list[reports.VoteRow], position: bool) -> list[ranking.Battle]:
    if not position:
        return reports.battles_from_rows(rows)
    # The position fit uses only votes whose shown order is known (app votes).
    return [
        ranking.Battle(r.model_a, r.model_b, r.outcome, r.question, r.shown_left)
        for r in rows
        if r.shown_left is not None
    ]


def results_json(results: Results) -> dict:
    """The export contract (``reports.to_json``) plus the page's other figures."""
    out = reports.to_json(
        results.ranking, results.pairs, results.study.name, categories=results.categories
    )
    out["n_votes"] = results.n_votes
    out["position_bias"] = {
        "left_wins": results.position.left_wins,
        "right_wins": results.position.right_wins,
        "ties": results.position.ties,
        "unknown": results.position.unknown,
        "left_rate": results.position.left_rate,
        "p_value": results.position.p_value,
    }
    out["agreement"] = {
        "krippendorff_alpha": results.agreement.alpha,
        "comparisons": results.agreement.comparisons,
        "votes": results.agreement.votes,
        "note": results.agreement.note,
    }
    out["annotators"] = [
        {
            "annotator": a.annotator,
            "votes": a.votes,
            "ties": a.ties,
            "tie_rate": a.tie_rate,
            "agreement": a.agreement,
            "compared": a.compared,
        }
        for a in results.annotators
    ]
    if results.ranking is not None:
        out["win_probability"] = [
            {"model_a": a, "model_b": b, "probability": p}
            for (a, b), p in sorted(results.ranking.win_probability.items())
        ]
    return out


def votes_csv(*, study: Study) -> str:
    """One row per vote, with what it was about and how it was cast."""
    return reports.csv_text(VOTE_COLUMNS, (_vote_row(vote) for vote in _votes(study)))


def _vote_row(vote: Vote) -> list:
    c = vote.comparison
    left_model = ""
    if vote.assignment_id:
        left_model = (c.run_a if vote.assignment.left == "a" else c.run_b).model.name
    winner = {"a": c.run_a.model.name, "b": c.run_b.model.name, "tie": "tie"}[vote.outcome]
    return [
        vote.pk,
        c.question.position,
        c.question.external_id,
        c.question.category,
        c.question.text,
        c.run_a.model.name,
        c.run_b.model.name,
        vote.outcome,
        winner,
        vote.shown,
        left_model,
        vote.annotator_id or "",
        vote.judge,
        int(vote.imported),
        vote.created_at.isoformat(),
        "" if vote.seconds is None else f"{vote.seconds:.1f}",
        vote.comment,
    ]


def battles_jsonl(*, study: Study, conversations: bool = True) -> str:
    """The study's votes in FastChat's battle shape (one JSON object per line)."""
    records = []
    for vote in _votes(study).select_related("comparison__answer_a", "comparison__answer_b"):
        c = vote.comparison
        question_id = c.question.external_id or str(c.question.position)
        conversation_a = conversation_b = None
        if conversations:
            conversation_a = _conversation(c.question.text, c.answer_a.text)
            conversation_b = _conversation(c.question.text, c.answer_b.text)
        records.append(
            battles.BattleRecord(
                model_a=c.run_a.model.name,
                model_b=c.run_b.model.name,
                winner={"a": "model_a", "b": "model_b", "tie": "tie"}[vote.outcome],
                question_id=question_id,
                judge=vote.judge or (f"user {vote.annotator_id}" if vote.annotator_id else ""),
                tstamp=vote.created_at.timestamp(),
                conversation_a=conversation_a,
                conversation_b=conversation_b,
            )
        )
    return battles.write_battles(records)


def _conversation(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def export(*, study: Study, fmt: str, results: Results | None = None) -> tuple[str, str, str]:
    """(text, content type, file name) of one export format."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(UNKNOWN_EXPORT.format(fmt=fmt))
    if fmt == "votes":
        text = votes_csv(study=study)
    elif fmt == "battles":
        text = battles_jsonl(study=study)
    else:
        results = results or study_results(study=study)
        if fmt == "csv":
            text = reports.pairs_csv(results.pairs)
        elif fmt == "strengths":
            text = reports.strengths_csv(results.ranking)
        elif fmt == "json":
            text = json.dumps(results_json(results), ensure_ascii=False, indent=2) + "\n"
        else:
            text = reports.to_markdown(results.ranking, results.pairs, study.name)
    filename = f"study-{study.pk}-{EXTENSIONS[fmt]}"
    return text, CONTENT_TYPES[fmt], filename


def strength_chart(*, study: Study, fitted: ranking.Ranking, fmt: str) -> bytes:
    return plots.strength_chart(fitted, fmt=fmt, title=study.name)


def studies_compare(*, first: Study, second: Study, bootstrap: int = 0) -> dict:
    """Two studies over the same models (say human votes against an imported GPT-4 study):
    Kendall's tau of the strengths, both strengths, and per model pair both win rates."""
    rankings = []
    for study in (first, second):
        found = study_results(study=study, bootstrap=bootstrap)
        if found.ranking is None:
            raise ValueError(f"study {study.name!r} has no votes yet")
        rankings.append(found.ranking)
    compared = ranking.compare(*rankings)
    return {
        "first": first.name,
        "second": second.name,
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
