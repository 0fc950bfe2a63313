"""Starting and cancelling a sweep. What happens in between is sweeps/progress.py.

``sweep_create`` writes everything in one transaction: the sweep, the base model's generation
run on the prompt set, and one queued fine-tune run per cell (the generation service's and the
fine-tune service's own checks apply; any refusal leaves nothing behind). The runs are enqueued
once it commits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError, StateConflict
from generation.models import FineTuneRun, InstructionDataset, LanguageModel, PromptSet
from generation.params import generation_params_check, hyperparameters_check
from generation.runs import generation_run_cancel, generation_run_create
from generation.training.finetune import finetune_run_cancel, finetune_run_create
from generation.training.overlap import PromptSetOverlap, training_overlap
from judging.models import JudgePrompt
from judging.prompts import judge_prompt_for
from judging.runs import judge_run_cancel

from .grid import cells_of
from .models import Sweep, SweepCell

SWEEP_NAME_TAKEN = "a sweep named {name!r} already exists"
BAD_NAME = "a sweep needs a name"
# Its models and studies are named after it ("NAME-cell3", "sweep 4 cell 3: NAME"), in 200.
NAME_LENGTH = 150
LONG_NAME = "a sweep name has at most {limit} characters (got {length})"
BAD_MODE = "unknown mode {mode!r}; use pairwise or grading"
BAD_METHOD = "a sweep tunes with lora or full (got {method!r})"
GRID_PARAM = "{name} is an axis of the grid; give it as a grid value, not a shared parameter"
BAD_VALUE = "{axis} must be positive numbers (got {value!r})"
EMPTY_PROMPT_SET = "prompt set {name!r} has no questions"
TOO_MANY_CELLS = (
    "the grid makes {count} cells ({axes}), over the limit of {limit} fine-tune runs a sweep may "
    "queue (SWEEP_MAX_CELLS); sweep fewer values or split the grid"
)
CANNOT_CANCEL = "sweep {name!r} is {status}; only a running sweep can be cancelled"
METHODS = (FineTuneRun.Method.LORA, FineTuneRun.Method.FULL)
GRID_AXES = ("learning_rate", "epochs")


def _positive(axis: str, values: Sequence, *, whole: bool = False, none_ok: bool = False):
    for value in values:
        if value is None and none_ok:
            continue
        kind_ok = isinstance(value, int) if whole else isinstance(value, int | float)
        if isinstance(value, bool) or not kind_ok or value <= 0:
            raise ServiceError(BAD_VALUE.format(axis=axis, value=value))


def _cells_within_limit(**axes: Sequence) -> None:
    """Refuse a grid of more cells than SWEEP_MAX_CELLS before any cell is made: the product
    of a few long axes is millions of queued fine-tunes."""
    count, limit = math.prod(len(values) for values in axes.values()), settings.SWEEP_MAX_CELLS
    if count > limit:
        sizes = " x ".join(f"{name.replace('_', ' ')} {len(v)}" for name, v in axes.items())
        raise ServiceError(TOO_MANY_CELLS.format(count=count, axes=sizes, limit=limit))


def _judge_prompt(mode: str, prompt: JudgePrompt | None) -> JudgePrompt:
    grading = mode == Sweep.Mode.GRADING
    return judge_prompt_for(grading=grading) if prompt is None else _kind(prompt, grading)


def _kind(prompt: JudgePrompt, grading: bool) -> JudgePrompt:
    wanted = JudgePrompt.Kind.GRADING if grading else JudgePrompt.Kind.PAIRWISE
    if prompt.kind != wanted:
        raise ServiceError(
            f"judge prompt {prompt} is a {prompt.kind} prompt; a {wanted} sweep needs a "
            f"{wanted} prompt"
        )
    return prompt


def sweep_create(
    *,
    name: str,
    base_model: LanguageModel,
    mixes: Sequence[Sequence[InstructionDataset]],
    rows: Sequence[int | None],
    learning_rates: Sequence[float],
    prompt_set: PromptSet,
    judge: LanguageModel,
    epochs: Sequence[float] = (1.0,),
    methods: Sequence[str] = (FineTuneRun.Method.LORA,),
    mode: str = Sweep.Mode.PAIRWISE,
    judge_prompt: JudgePrompt | None = None,
    judge_params: dict | None = None,
    generation_params: dict | None = None,
    params: dict | None = None,
    human_study: bool = False,
    seed: int = 0,
    user=None,
    enqueue: bool = True,
) -> Sweep:
    """Record a sweep with one fine-tune run per cell of the grid (mixes x rows x learning
    rates x epochs x methods) and the base model's generation run on ``prompt_set``.

    A mix is a list of instruction data sets trained on together; ``rows`` are per data set of
    the mix (None: all of its rows). ``params``: fine-tune hyper-parameters every cell shares
    (``max_steps``, ``batch_size``, ...); ``generation_params``: the answers' decoding (base and
    cells alike); ``judge_params``: the judge's. ServiceError, with nothing written, for
    anything a run would refuse.
    """
    name = name.strip()
    if not name:
        raise ServiceError(BAD_NAME)
    if len(name) > NAME_LENGTH:
        raise ServiceError(LONG_NAME.format(limit=NAME_LENGTH, length=len(name)))
    if mode not in Sweep.Mode.values:
        raise ServiceError(BAD_MODE.format(mode=mode))
    for method in methods:
        if method not in METHODS:
            raise ServiceError(BAD_METHOD.format(method=method))
    _cells_within_limit(
        mixes=mixes, rows=rows, learning_rates=learning_rates, epochs=epochs, methods=methods
    )
    _positive("rows", rows, whole=True, none_ok=True)
    _positive("learning rates", learning_rates)
    _positive("epochs", epochs)
    shared = hyperparameters_check(dict(params or {}))
    for axis in GRID_AXES:
        if axis in shared:
            raise ServiceError(GRID_PARAM.format(name=axis))
    generation_params = generation_params_check(dict(generation_params or {}))
    judge_params = generation_params_check(dict(judge_params or {}))
    prompt = _judge_prompt(mode, judge_prompt)
    if not prompt_set.questions.exists():
        raise ServiceError(EMPTY_PROMPT_SET.format(name=prompt_set.name))
    try:
        cells = cells_of(
            mixes=[[d.pk for d in mix] for mix in mixes],
            rows=list(rows),
            learning_rates=[float(v) for v in learning_rates],
            epochs=[float(v) for v in epochs],
            methods=list(methods),
        )
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    datasets = {d.pk: d for mix in mixes for d in mix}
    if Sweep.objects.filter(name=name).exists():
        raise ServiceError(SWEEP_NAME_TAKEN.format(name=name))
    try:
        with transaction.atomic():
            sweep = Sweep.objects.create(
                name=name,
                base_model=base_model,
                grid={
                    "mixes": [list(c) for c in dict.fromkeys(c.mix for c in cells)],
                    "rows": list(rows),
                    "learning_rates": [float(v) for v in learning_rates],
                    "epochs": [float(v) for v in epochs],
                    "methods": list(methods),
                },
                params=shared,
                prompt_set=prompt_set,
                generation_params=generation_params,
                judge=judge,
                mode=mode,
                judge_prompt=prompt,
                judge_params=judge_params,
                human_study=human_study,
                seed=seed,
                created_by=user if getattr(user, "pk", None) else None,
            )
            sweep.base_run = generation_run_create(
                model=base_model,
                prompt_set=prompt_set,
                params=generation_params,
                seed=seed,
                user=user,
                enqueue=enqueue,
            )
            sweep.save(update_fields=["base_run"])
            for position, values in enumerate(cells, start=1):
                _cell_create(sweep, position, values, datasets, shared, user, enqueue)
            audit_record(
                user=user,
                action=Action.SWEEP_START,
                obj=sweep,
                base_model=base_model.name,
                cells=len(cells),
                grid=sweep.grid,
                params=shared,
                prompt_set=prompt_set.name,
                judge=judge.name,
                mode=mode,
                judge_prompt=str(prompt),
                human_study=human_study,
                seed=seed,
            )
    except IntegrityError:
        raise ServiceError(SWEEP_NAME_TAKEN.format(name=name)) from None
    return sweep


def _cell_create(sweep, position, values, datasets, shared, user, enqueue) -> SweepCell:
    mix = [datasets[pk] for pk in values.mix]
    counts = {d.pk: d.examples.count() for d in mix}
    train_rows = sum(counts[d.pk] if values.rows is None else values.rows for d in mix)
    run = finetune_run_create(
        base_model=sweep.base_model,
        datasets=[(d, values.rows) for d in mix],
        method=values.method,
        params={
            **shared,
            "learning_rate": values.learning_rate,
            "epochs": values.epochs,
            "seed": shared.get("seed", sweep.seed),
        },
        model_name=f"{sweep.name}-cell{position}",
        user=user,
        enqueue=enqueue,
    )
    return SweepCell.objects.create(
        sweep=sweep,
        position=position,
        datasets=[{"id": d.pk, "name": d.name} for d in mix],
        mix=" + ".join(d.name for d in mix),
        rows=values.rows,
        train_rows=train_rows,
        learning_rate=values.learning_rate,
        epochs=values.epochs,
        method=values.method,
        finetune_run=run,
    )


def _cancel_quietly(service, run, user) -> None:
    if run is not None and run.status in type(run).ACTIVE:
        # ServiceError: it finished meanwhile, nothing left to stop.
        with contextlib.suppress(ServiceError):
            service(run=run, user=user)


@transaction.atomic
def sweep_cancel(*, sweep: Sweep, user=None) -> Sweep:
    """Stop a running sweep: every queued or running run of it is cancelled (a fine-tune stops
    after its current step), unfinished cells are marked cancelled, scored ones stay."""
    sweep = Sweep.objects.select_for_update().get(pk=sweep.pk)
    if sweep.status != Sweep.Status.RUNNING:
        raise StateConflict(CANNOT_CANCEL.format(name=sweep.name, status=sweep.status))
    _cancel_quietly(generation_run_cancel, sweep.base_run, user)
    stopped = 0
    for cell in sweep.cells.select_related("finetune_run", "generation_run", "judge_run"):
        if cell.status in SweepCell.DONE:
            continue
        _cancel_quietly(finetune_run_cancel, cell.finetune_run, user)
        _cancel_quietly(generation_run_cancel, cell.generation_run, user)
        _cancel_quietly(judge_run_cancel, cell.judge_run, user)
        cell.status = SweepCell.Status.CANCELLED
        cell.save(update_fields=["status"])
        stopped += 1
    sweep.status = Sweep.Status.CANCELLED
    sweep.finished_at = timezone.now()
    sweep.save(update_fields=["status", "finished_at"])
    audit_record(user=user, action=Action.SWEEP_CANCEL, obj=sweep, cells_stopped=stopped)
    return sweep


def sweep_overlap(sweep: Sweep) -> list[PromptSetOverlap]:
    """The grid's training rows (every data set of every mix) against the sweep's prompt set:
    empty, or one entry saying how many of its questions the rows hold (exact, near)."""
    ids = {int(i) for mix in (sweep.grid or {}).get("mixes", []) for i in mix}
    datasets = InstructionDataset.objects.filter(pk__in=ids)
    return training_overlap(datasets=datasets, prompt_sets=[sweep.prompt_set])
