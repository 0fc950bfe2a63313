"""What the sweep page, the admin, the API and the command show: the grid as rows (one per
cell, the best marked) and the chart's input. Staff only: it names models, data sets and runs."""

from __future__ import annotations

from django.urls import reverse

from .grid import best_index
from .models import Sweep, SweepCell
from .plots import CellPoint, Chart, sweep_chart


def _facet(cell: SweepCell, varied: dict[str, bool]) -> str:
    parts = []
    if varied["mix"]:
        parts.append(cell.mix)
    if varied["method"]:
        parts.append(cell.method)
    if varied["epochs"]:
        parts.append(f"{cell.epochs:g} epochs")
    return ", ".join(parts)


def _admin_link(name: str, pk: int | None) -> str | None:
    return reverse(f"admin:{name}_change", args=[pk]) if pk else None


def sweep_cells(sweep: Sweep) -> list[dict]:
    """One dict per cell in grid order: its values, state, score with interval, the runs'
    ids and admin links, ``best`` (the highest score; see ``grid.best_index``) and ``facet``
    (the panel of the chart it is drawn in)."""
    cells = list(
        sweep.cells.select_related(
            "finetune_run", "generation_run", "judge_run", "finetune_run__result_model"
        ).order_by("position")
    )
    varied = {
        axis: len({getattr(c, axis) for c in cells}) > 1 for axis in ("mix", "method", "epochs")
    }
    best = best_index(
        [
            (c.score, c.ci_low) if c.status == SweepCell.Status.SUCCEEDED else (None, None)
            for c in cells
        ]
    )
    rows = []
    for i, c in enumerate(cells):
        tune = c.finetune_run
        rows.append(
            {
                "position": c.position,
                "mix": c.mix,
                "rows": c.rows,
                "train_rows": c.train_rows,
                "learning_rate": c.learning_rate,
                "epochs": c.epochs,
                "method": c.method,
                "status": c.status,
                "score": c.score,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "counted": c.counted,
                "baseline": c.baseline,
                "error": c.error,
                "best": i == best,
                "facet": _facet(c, varied),
                "model": tune.result_model.name if tune and tune.result_model else None,
                "finetune_run": c.finetune_run_id,
                "finetune_step": f"{tune.step}/{tune.total_steps}" if tune else "",
                "generation_run": c.generation_run_id,
                "study": c.study_id,
                "judge_run": c.judge_run_id,
                "links": {
                    "finetune_run": _admin_link("generation_finetunerun", c.finetune_run_id),
                    "generation_run": _admin_link("generation_generationrun", c.generation_run_id),
                    "study": _admin_link("annotation_study", c.study_id),
                    "judge_run": _admin_link("judging_judgerun", c.judge_run_id),
                },
            }
        )
    return rows


def sweep_counts(cells: list[dict]) -> dict[str, int]:
    """How many cells are in each state (every state listed)."""
    return {s: sum(c["status"] == s for c in cells) for s in SweepCell.Status.values}


def _baseline(sweep: Sweep, cells: list[dict]) -> float | None:
    if sweep.mode == Sweep.Mode.PAIRWISE:
        return 0.5  # the base model against itself
    grades = [c["baseline"] for c in cells if c["baseline"] is not None]
    return sum(grades) / len(grades) if grades else None


def sweep_plot(sweep: Sweep, *, fmt: str = "png", cells: list[dict] | None = None) -> Chart:
    """The sweep's chart (``generation.engine.charts`` formats: png, svg)."""
    cells = sweep_cells(sweep) if cells is None else cells
    points = [
        CellPoint(
            position=c["position"],
            facet=c["facet"],
            rows=c["train_rows"],
            learning_rate=c["learning_rate"],
            score=c["score"],
            low=c["ci_low"],
            high=c["ci_high"],
            best=c["best"],
        )
        for c in cells
    ]
    return sweep_chart(
        points,
        mode=sweep.mode,
        fmt=fmt,
        title=f"{sweep.name}: {sweep.base_model.name}",
        baseline=_baseline(sweep, cells),
    )
