"""Moving a sweep on: each cell from fine-tune to generation to judge to score, then the sweep's
end (and, if asked, the human study of every cell's model).

``sweep_advance`` reads the states of the runs each cell points at and starts what is missing,
under a lock on the sweep row, so calling it any number of times, from any process, is safe. It
is called when a run of the sweep finishes (the spine's run-finished hook,
evalsite.runs.lifecycle, sends ``sweeps_advance_task``) and periodically for every running
sweep, so a missed hook only delays.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.studies import study_create
from evalsite.errors import ServiceError
from generation.models import FineTuneRun, GenerationRun
from generation.runs import generation_run_create
from judging.grading import grading_results
from judging.models import JudgeRun, Judgment
from judging.runs import judge_run_create

from .grid import LOSS, TIE, WIN, Score, win_rate
from .models import Sweep, SweepCell

log = logging.getLogger(__name__)

RUN_ENDED = "{label} {id} {status}: {error}"
BASE_ENDED = "the base model's generation run {id} {status}; nothing to compare with"
NO_VERDICTS = "judge run {id} gave no parsable verdict; no score"
STUDY_FAILED = "the human study could not be made: {error}"


def _resamples() -> int:
    return int(getattr(settings, "SWEEP_BOOTSTRAP_RESAMPLES", 2000))


def _ended(label: str, run) -> str:
    return RUN_ENDED.format(
        label=label, id=run.pk, status=run.status, error=run.error.strip()[-500:] or "no error"
    )


def _set(cell: SweepCell, status: str, error: str = "") -> None:
    if (cell.status, cell.error) != (status, error):
        cell.status, cell.error = status, error
        cell.save(update_fields=["status", "error"])


def pairwise_score(cell: SweepCell, run: JudgeRun, *, seed: int) -> Score:
    """The cell's win rate over the base model from a pairwise judge run's verdicts."""
    verdicts = (
        Judgment.objects.filter(run=run, comparison__isnull=False)
        .exclude(verdict=Judgment.Verdict.UNPARSABLE)
        .values_list("comparison__question_id", "comparison__run_a_id", "verdict")
    )
    outcomes = []
    for question, run_a, verdict in verdicts:
        side = "a" if run_a == cell.generation_run_id else "b"
        outcome = TIE if verdict == Judgment.Verdict.TIE else WIN if verdict == side else LOSS
        outcomes.append((question, outcome))
    return win_rate(outcomes, seed=seed, resamples=_resamples())


def grading_score(cell: SweepCell, run: JudgeRun, *, seed: int) -> tuple[Score, float | None]:
    """The cell's mean grade with its interval, and the base model's mean grade."""
    results = grading_results(run, resamples=_resamples(), seed=seed)
    by_model = {m["model"]: m for m in results["models"]}
    mine = by_model[cell.generation_run.model.name]
    base = by_model.get(cell.sweep.base_model.name, {})
    score = Score(mine["mean"], mine["low"], mine["high"], mine["graded"])
    return score, base.get("mean")


def _study_name(base: str) -> str:
    from annotation.models import Study

    name, n = base, 1
    while Study.objects.filter(name=name).exists():
        n += 1
        name = f"{base} ({n})"
    return name


def _judge(sweep: Sweep, cell: SweepCell) -> None:
    """The cell's two-model study (base run v. cell run) and its judge run."""
    if cell.study_id is None:
        cell.study = study_create(
            name=_study_name(f"sweep {sweep.pk} cell {cell.position}: {sweep.name}"),
            runs=[sweep.base_run, cell.generation_run],
            votes_per_comparison=1,
            user=sweep.created_by,
        )
        cell.save(update_fields=["study"])
    cell.judge_run = judge_run_create(
        judge=sweep.judge,
        study=cell.study,
        prompt=sweep.judge_prompt,
        grading=sweep.mode == Sweep.Mode.GRADING,
        params=sweep.judge_params,
        seed=sweep.seed,
        user=sweep.created_by,
    )
    cell.save(update_fields=["judge_run"])


def _score(sweep: Sweep, cell: SweepCell) -> None:
    run = cell.judge_run
    if sweep.mode == Sweep.Mode.GRADING:
        score, cell.baseline = grading_score(cell, run, seed=sweep.seed)
    else:
        score, cell.baseline = pairwise_score(cell, run, seed=sweep.seed), 0.5
    if score.score is None:
        _set(cell, SweepCell.Status.FAILED, NO_VERDICTS.format(id=run.pk))
        return
    cell.score, cell.ci_low, cell.ci_high, cell.counted = score
    cell.status, cell.error = SweepCell.Status.SUCCEEDED, ""
    cell.save(
        update_fields=["score", "ci_low", "ci_high", "counted", "baseline", "status", "error"]
    )


def _advance_cell(sweep: Sweep, cell: SweepCell) -> None:
    """One step (or none) for one unfinished cell; each branch is what its runs' states call for."""
    tune = cell.finetune_run
    if tune.status in FineTuneRun.ACTIVE:
        return _set(cell, SweepCell.Status.TRAINING)
    if tune.status != FineTuneRun.Status.SUCCEEDED:
        return _set(cell, SweepCell.Status.FAILED, _ended("fine-tune run", tune))
    if cell.generation_run_id is None:
        cell.generation_run = generation_run_create(
            model=tune.result_model,
            prompt_set=sweep.prompt_set,
            params=sweep.generation_params,
            seed=sweep.seed,
            user=sweep.created_by,
        )
        cell.save(update_fields=["generation_run"])
        return _set(cell, SweepCell.Status.GENERATING)
    answers, base = cell.generation_run, sweep.base_run
    if answers.status != GenerationRun.Status.SUCCEEDED:
        if answers.status in GenerationRun.ACTIVE:
            return _set(cell, SweepCell.Status.GENERATING)
        return _set(cell, SweepCell.Status.FAILED, _ended("generation run", answers))
    if base.status != GenerationRun.Status.SUCCEEDED:
        if base.status in GenerationRun.ACTIVE:
            return _set(cell, SweepCell.Status.GENERATING)  # waiting for the base's answers
        return _set(
            cell, SweepCell.Status.FAILED, BASE_ENDED.format(id=base.pk, status=base.status)
        )
    if cell.judge_run_id is None:
        _judge(sweep, cell)
        return _set(cell, SweepCell.Status.JUDGING)
    judged = cell.judge_run
    if judged.status in JudgeRun.ACTIVE:
        return _set(cell, SweepCell.Status.JUDGING)
    if judged.status != JudgeRun.Status.SUCCEEDED:
        return _set(cell, SweepCell.Status.FAILED, _ended("judge run", judged))
    return _score(sweep, cell)


def _finish(sweep: Sweep, cells: list[SweepCell]) -> None:
    scored = [c for c in cells if c.status == SweepCell.Status.SUCCEEDED]
    if sweep.human_study and sweep.study_id is None and scored:
        try:
            with transaction.atomic():
                sweep.study = study_create(
                    name=_study_name(f"{sweep.name} (sweep {sweep.pk})"),
                    runs=[sweep.base_run, *(c.generation_run for c in scored)],
                    user=sweep.created_by,
                )
        except ServiceError as exc:
            sweep.error = STUDY_FAILED.format(error=exc)
    sweep.status = Sweep.Status.SUCCEEDED if scored else Sweep.Status.FAILED
    sweep.finished_at = timezone.now()
    sweep.save(update_fields=["study", "error", "status", "finished_at"])


def sweep_advance(*, sweep_id: int) -> Sweep | None:
    """Bring one sweep up to date with its runs (None: no such sweep). A cell that cannot go on
    (a service refuses, e.g. its model's answers do not fit the judge) is failed with the reason;
    the other cells go on."""
    with transaction.atomic():
        sweep = (
            Sweep.objects.select_for_update(of=("self",))
            .select_related("base_run", "base_model", "judge", "judge_prompt", "prompt_set")
            .filter(pk=sweep_id)
            .first()
        )
        if sweep is None or sweep.status != Sweep.Status.RUNNING:
            return sweep
        cells = list(
            sweep.cells.select_related(
                "finetune_run__result_model", "generation_run__model", "judge_run", "sweep"
            )
        )
        for cell in cells:
            if cell.status in SweepCell.DONE:
                continue
            try:
                with transaction.atomic():
                    _advance_cell(sweep, cell)
            except ServiceError as exc:
                log.warning("sweep %s cell %s cannot go on: %s", sweep.pk, cell.position, exc)
                cell.refresh_from_db()
                _set(cell, SweepCell.Status.FAILED, str(exc))
        if all(cell.status in SweepCell.DONE for cell in cells):
            _finish(sweep, cells)
    return sweep


def sweeps_advance(*, sweep_id: int | None = None) -> list[int]:
    """Advance one sweep, or every running one (the periodic task); the ids advanced."""
    ids = (
        [sweep_id]
        if sweep_id is not None
        else list(Sweep.objects.filter(status=Sweep.Status.RUNNING).values_list("pk", flat=True))
    )
    for pk in ids:
        sweep_advance(sweep_id=pk)
    return ids


def sweeps_of_run(model, run_id: int) -> list[int]:
    """The running sweeps a run belongs to (as a cell's run, or the base model's run)."""
    field = {FineTuneRun: "finetune_run", GenerationRun: "generation_run", JudgeRun: "judge_run"}
    if model not in field:
        return []
    found = Q(cells__in=SweepCell.objects.filter(**{f"{field[model]}_id": run_id}))
    if model is GenerationRun:
        found |= Q(base_run_id=run_id)
    running = Sweep.objects.filter(found, status=Sweep.Status.RUNNING)
    return sorted(set(running.values_list("pk", flat=True)))


def run_finished(model, run_id: int) -> None:
    """The run-finished hook (registered by SweepsConfig.ready): advance the run's sweeps in a
    `default` worker, once whatever wrote the run's end has committed."""
    from .tasks import sweeps_advance_task

    for sweep_id in sweeps_of_run(model, run_id):
        transaction.on_commit(lambda pk=sweep_id: sweeps_advance_task.delay(pk))
