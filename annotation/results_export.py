"""A study's results as files and as the API's JSON: pairs and strengths CSV, the JSON export,
Markdown, FastChat battles and the raw votes (``results`` reads, this module writes)."""

from __future__ import annotations

import json

from . import exports, figures, powered, quality, reports
from .models import Study
from .results import Results, counted_vote_objects, study_judge_agreement, study_results
from .study_votes import reading

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


def results_json(results: Results) -> dict:
    """The export contract (``reports.to_json``) plus the page's other figures."""
    out = reports.to_json(
        results.ranking, results.pairs, results.study.name, categories=results.categories
    )
    out["n_votes"] = results.n_votes
    out["voters"] = results.options["voters"]
    out["turn"] = results.options["turn"]
    combined = results.combined
    if combined is not None:
        out["prediction_powered"] = powered.combined_json(combined)
        if results.options["voters"] == "all":
            # The study's strengths are the prediction-powered ones, and say so.
            out["strengths_from"] = powered.POWERED
            out["pooling_note"] = powered.POOLING
            if combined.powered is not None:
                out["models"] = powered.models_json(combined.powered)
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
    out["judge_agreement"] = study_judge_agreement(study=results.study)
    # Sections the apps built on this one add (the LLM judge's runs and routing).
    from .hooks import results_sections

    for section in results_sections():
        out |= section.export(results.study)
    out["annotator_quality"] = [quality.quality_dict(q) for q in results.quality]
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
    out |= figures.figures_json(
        study=results.study,
        fitted=results.ranking,
        options=results.options,
        style=results.style,
        categories=results.category_rankings,
        weighted_votes=sum(1 for w in results.weights if w != 1),
    )
    return out


def export(
    *,
    study: Study,
    fmt: str,
    results: Results | None = None,
    provenance: bool = False,
    **options,
) -> tuple[str, str, str]:
    """(text, content type, file name) of one export format; ``options``: the fit's, as
    ``fit_options`` takes them (the results page's). ``provenance``: the votes and battles
    exports also say how each side's answer was made (exports.PROVENANCE_FIELDS)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(UNKNOWN_EXPORT.format(fmt=fmt))
    voters, turn = options.get("voters", "people"), options.get("turn")
    if fmt == "votes":
        text = exports.votes_csv(
            votes=counted_vote_objects(study, voters, turn), provenance=provenance
        )
    elif fmt == "battles":
        votes = counted_vote_objects(study, voters, turn).select_related(
            "comparison__answer_a", "comparison__answer_b"
        )
        text = exports.battles_jsonl(votes=votes, provenance=provenance)
    else:
        with reading(study):
            text = _from_results(study, fmt, results or study_results(study=study, **options))
    filename = f"study-{study.pk}-{EXTENSIONS[fmt]}"
    return text, CONTENT_TYPES[fmt], filename


def _from_results(study: Study, fmt: str, results: Results) -> str:
    if fmt == "csv":
        return reports.pairs_csv(results.pairs)
    if fmt == "strengths" and results.options["voters"] == "all":
        return powered.strengths_csv(results.combined.powered if results.combined else None)
    if fmt == "strengths":
        return reports.strengths_csv(results.ranking)
    if fmt == "json":
        return json.dumps(results_json(results), ensure_ascii=False, indent=2) + "\n"
    text = reports.to_markdown(results.ranking, results.pairs, study.name, style=results.style)
    if results.combined is not None:
        text += "\n## People, judge and prediction-powered strengths\n\n"
        text += powered.markdown(results.combined)
    return text
