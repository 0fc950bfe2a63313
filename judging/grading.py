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


def _score(value: float | None) -> float | int | None:
    """A score as it reads: 8 for 8.0, 8.5 as it is."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def grading_results(run: JudgeRun, *, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The grades of a grading run (ValueError for a pairwise one).

    ``models``: one entry per model of the study, in the study's order, with ``graded``,
    ``unparsable``, ``mean``, ``low``, ``high`` (None while nothing is graded); ``questions``:
    one row per question and turn graded, its ``scores`` mapping model name to the score, or
    None when the judge's reply was unparsable (a model not graded yet is absent). Both are on
    the run's prompt's scale (``score_min`` - ``score_max``). Scores on different scales are
    never averaged together: ``scales`` holds the same figures once per scale the run's
    prompts grade on (a reference prompt may grade on another), run prompt's scale first."""
    if run.prompt.kind != JudgePrompt.Kind.GRADING:
        raise ValueError(NOT_GRADING.format(id=run.pk))
    models = [sr.model for sr in run.study.study_runs.select_related("model").order_by("pk")]
    own = (run.prompt.score_min, run.prompt.score_max)
    judgments = Judgment.objects.filter(run=run, answer__isnull=False).values_list(
        "answer__question__position",
        "answer__turn",
        "answer__question__text",
        "answer__run__model__name",
        "verdict",
        "score",
        "prompt__name",
        "prompt__score_min",
        "prompt__score_max",
    )
    by_scale: dict[tuple[int, int], list] = {own: []}
    prompts: dict[tuple[int, int], set[str]] = {own: {run.prompt.name}}
    for *row, prompt, lowest, highest in judgments:
        scale = own if lowest is None else (lowest, highest)
        by_scale.setdefault(scale, []).append(row)
        prompts.setdefault(scale, set()).add(prompt or run.prompt.name)
    scales = [
        {
            "score_min": scale[0],
            "score_max": scale[1],
            "prompts": sorted(prompts[scale]),
            **_one_scale(models, by_scale[scale], resamples=resamples, seed=seed),
        }
        for scale in by_scale
    ]
    main = scales[0]
    return {
        "run": run.pk,
        "judge": run.judge.name,
        "prompt": str(run.prompt),
        "score_min": run.prompt.score_min,
        "score_max": run.prompt.score_max,
        "expected": run.total,
        "graded": sum(s["graded"] for s in scales),
        "unparsable": sum(s["unparsable"] for s in scales),
        "level": LEVEL,
        "resamples": resamples,
        "seed": seed,
        "models": main["models"],
        "questions": main["questions"],
        "scales": scales,
    }


def _one_scale(models, judgments, *, resamples: int, seed: int) -> dict:
    """Means with intervals and the per-question table of judgments on one scale."""
    names = [m.name for m in models]
    column = {name: i for i, name in enumerate(names)}
    table: dict[tuple[int, int], dict] = {}
    for position, turn, text, model, verdict, score in judgments:
        row = table.setdefault(
            (position, turn), {"position": position, "turn": turn, "question": text, "scores": {}}
        )
        row["scores"][model] = _score(score) if verdict == Judgment.Verdict.SCORED else None
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
        "graded": int(graded.sum()),
        "unparsable": sum(unparsable),
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
