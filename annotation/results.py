"""Reads for the results page, the results API and the exports.

Votes leave the database once, as plain ``VoteRow``s; the plain modules (``reports``,
``ranking``, ``plots``, ``battles``) turn them into tables, strengths, charts and files.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

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


def study_vote_rows(*, study: Study) -> list[reports.VoteRow]:
    rows = []
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
    return rows


def _annotator(vote: Vote) -> str:
    if vote.annotator_id:
        return f"user {vote.annotator_id}"
    return f"judge {vote.judge}" if vote.judge else "imported"


def study_results(
    *,
    study: Study,
    method: str = "bradley_terry",
    bootstrap: int = ranking.DEFAULT_BOOTSTRAP,
    resample: str = "question",
    seed: int = 0,
    position: bool = False,
) -> Results:
    models = study_models(study=study)
    rows = study_vote_rows(study=study)
    fitted = None
    if rows:
        fitted = ranking.rank(
            _battles(rows, position),
            models=models,
            method=method,
            bootstrap=bootstrap,
            resample=resample,
            seed=seed,
            position=position,
        )
    return Results(
        study=study,
        models=models,
        rows=rows,
        pairs=reports.pair_table(rows, models),
        categories=reports.category_tables(rows, models),
        ranking=fitted,
        position=reports.position_bias(rows),
        annotators=reports.annotator_table(rows),
        agreement=reports.agreement(rows),
        options={"method": method, "bootstrap": bootstrap, "resample": resample, "seed": seed},
    )


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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VOTE_COLUMNS)
    for vote in _votes(study):
        c = vote.comparison
        left_model = ""
        if vote.assignment_id:
            left_model = (c.run_a if vote.assignment.left == "a" else c.run_b).model.name
        winner = {"a": c.run_a.model.name, "b": c.run_b.model.name, "tie": "tie"}[vote.outcome]
        writer.writerow(
            [
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
        )
    return buffer.getvalue()


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


def strength_chart(*, results: Results, fmt: str) -> bytes:
    if results.ranking is None:
        raise ValueError("no votes yet: there is nothing to chart")
    return plots.strength_chart(results.ranking, fmt=fmt, title=results.study.name)


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
