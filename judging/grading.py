"""What a single-answer grading run says about each model: a mean score with a bootstrap 95 %
interval, counts of graded and unparsable answers, and the per-question table of scores.

The interval resamples whole questions (a question's answers, one per model and turn, are
graded on the same task, so they are not independent draws), the way the ranking intervals do;
it is seeded, so the same run always reports the same interval. Staff only: it names models and
the judge.
"""

from __future__ import annotations

import numpy as np

from evalsite.exports import csv_text

from .engine.bootstrap import LEVEL, RESAMPLES, bootstrap_means
from .models import JudgePrompt, JudgeRun, Judgment

NOT_GRADING = "judge run {id} is a pairwise run; grades come from a grading run"


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def grading_results(run: JudgeRun, *, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The grades of a grading run (ValueError for a pairwise one).

    ``models``: one entry per model of the study, in the study's order, with ``graded``,
    ``unparsable``, ``mean``, ``low``, ``high`` (None while nothing is graded); ``questions``:
    one row per question and turn graded, its ``scores`` mapping model name to the score, or
    None when the judge's reply was unparsable (a model not graded yet is absent)."""
    if run.prompt.kind != JudgePrompt.Kind.GRADING:
        raise ValueError(NOT_GRADING.format(id=run.pk))
    models = [sr.model for sr in run.study.study_runs.select_related("model").order_by("pk")]
    names = [m.name for m in models]
    column = {name: i for i, name in enumerate(names)}
    judgments = Judgment.objects.filter(run=run, answer__isnull=False).values_list(
        "answer__question__position",
        "answer__turn",
        "answer__question__text",
        "answer__run__model__name",
        "verdict",
        "score",
    )
    table: dict[tuple[int, int], dict] = {}
    for position, turn, text, model, verdict, score in judgments:
        row = table.setdefault(
            (position, turn), {"position": position, "turn": turn, "question": text, "scores": {}}
        )
        row["scores"][model] = score if verdict == Judgment.Verdict.SCORED else None
    positions = sorted({position for position, _ in table})
    index = {position: i for i, position in enumerate(positions)}
    sums = np.zeros((len(positions), len(names)))
    counts = np.zeros((len(positions), len(names)))
    unparsable = [0] * len(names)
    for (position, _), row in table.items():
        for model, score in row["scores"].items():
            if score is None:
                unparsable[column[model]] += 1
            else:
                sums[index[position], column[model]] += score
                counts[index[position], column[model]] += 1
    means, low, high = bootstrap_means(sums, counts, resamples=resamples, seed=seed)
    graded = counts.sum(axis=0).astype(int)
    return {
        "run": run.pk,
        "judge": run.judge.name,
        "prompt": str(run.prompt),
        "score_min": run.prompt.score_min,
        "score_max": run.prompt.score_max,
        "expected": run.total,
        "graded": int(graded.sum()),
        "unparsable": sum(unparsable),
        "level": LEVEL,
        "resamples": resamples,
        "seed": seed,
        "models": [
            {
                "model": model.name,
                "label": model.display_label or model.name,
                "graded": int(graded[i]),
                "unparsable": unparsable[i],
                "mean": _number(means[i]),
                "low": _number(low[i]),
                "high": _number(high[i]),
            }
            for i, model in enumerate(models)
        ],
        "questions": [table[key] for key in sorted(table)],
    }


def grades_csv(results: dict) -> str:
    """The per-question table of ``grading_results`` as CSV: position, turn, question, then one
    column of scores per model (blank: unparsable or not graded yet). Question texts and model
    names go through the exports' formula rule (``evalsite.exports.csv_cell``)."""
    names = [m["model"] for m in results["models"]]
    rows = (
        [row["position"], row["turn"], row["question"], *(row["scores"].get(n) for n in names)]
        for row in results["questions"]
    )
    return csv_text(["position", "turn", "question", *names], rows)
