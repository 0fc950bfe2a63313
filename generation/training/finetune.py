"""Fine-tune runs: create, the engine's config and examples, execute (resuming from the last
checkpoint), cancel, resume, requeue. Training itself is generation/engine/train.py."""

from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evalsite import trackers
from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs.kinds import RunKind
from evalsite.runs.listing import progress_text

from ..models import (
    FineTuneLog,
    FineTuneRun,
    FineTuneRunDataset,
    InstructionDataset,
    LanguageModel,
    PreferenceDataset,
)
from ..params import FINETUNE_FIELDS, FULL_LEARNING_RATE, hyperparameters_check
from ..registry import MODEL_NAME_TAKEN, language_model_register, storage_relative
from ..templates import as_template, template_for
from .data import usable_examples

UNKNOWN_METHOD = "unknown fine-tuning method {method!r}; expected one of: lora, full, qlora, dpo"
NO_PREFERENCES = "method dpo trains on preference pairs: choose a preference data set"
PREFERENCES_NOT_DPO = "preference pairs are for method dpo; method {method!r} takes data sets"
DPO_NO_DATASETS = "method dpo trains on preference pairs only; leave the data sets out"
BASE_IS_ENDPOINT = "model {name!r} is served by an endpoint; there are no weights to fine-tune"
BASE_IS_ADAPTER = (
    "model {name!r} is a LoRA adapter; merge it into a standalone model first "
    "(admin action 'merge adapter') and fine-tune that"
)
NO_DATASETS = "choose at least one instruction data set"
DATASET_TWICE = "data set {name!r} is listed twice"
EMPTY_DATASET = "data set {name!r} has no rows"
TOO_MANY_ROWS = "data set {name!r} has {count} rows; cannot sample {rows}"
BAD_ROWS = "rows for {name!r} must be a positive number (or blank for all)"
UNKNOWN_TRACKER = (
    "unknown experiment tracker {value!r} for report_to; use one of: "
    + ", ".join(trackers.TRACKERS)
    + " (blank: the site's EXPERIMENT_TRACKER)"
)


def _qlora_problem() -> str | None:
    """Why QLoRA cannot be queued from here (None when it can).

    The worker checks again for a CUDA GPU before it loads anything. Here only the package is
    required: a deployment that installs bitsandbytes is one that has GPU workers, while the web
    host itself may well have no GPU.
    """
    import importlib.util

    from ..engine.train import QLORA_UNAVAILABLE

    if importlib.util.find_spec("bitsandbytes") is None:
        return QLORA_UNAVAILABLE.format(missing="no bitsandbytes")
    return None


def finetune_run_create(
    *,
    base_model: LanguageModel,
    datasets: Sequence[tuple[InstructionDataset, int | None]] = (),
    method: str = FineTuneRun.Method.LORA,
    params: dict | None = None,
    model_name: str = "",
    preferences: PreferenceDataset | None = None,
    report_to: str = "",
    user=None,
    enqueue: bool = True,
) -> FineTuneRun:
    """Record a queued fine-tune run on a mix of data sets and enqueue it once committed.

    ``datasets`` pairs each data set with the number of rows to sample from it (None: all).
    Unset hyper-parameters take the model fields' defaults; the learning rate defaults to
    ``FULL_LEARNING_RATE`` for full fine-tuning. Method ``dpo`` takes ``preferences`` (a
    preference data set) instead of data sets. ``report_to``: the experiment tracker its loss
    also goes to (``evalsite.trackers.TRACKERS``); blank: the site's ``EXPERIMENT_TRACKER``.
    """
    from ..engine.examples import held_out_count
    from ..engine.train import steps_for

    if method not in FineTuneRun.Method.values:
        raise ServiceError(UNKNOWN_METHOD.format(method=method))
    if report_to and report_to not in trackers.TRACKERS:
        raise ServiceError(UNKNOWN_TRACKER.format(value=report_to))
    if method == FineTuneRun.Method.QLORA and (problem := _qlora_problem()):
        raise ServiceError(problem)
    if base_model.is_endpoint:
        raise ServiceError(BASE_IS_ENDPOINT.format(name=base_model.name))
    if base_model.adapter_path:
        raise ServiceError(BASE_IS_ADAPTER.format(name=base_model.name))
    # Examples render with the version current now; a resumed run keeps rendering with it.
    template = template_for(base_model)
    if model_name and LanguageModel.objects.filter(name=model_name).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=model_name))
    values = hyperparameters_check(dict(params or {}))
    if method == FineTuneRun.Method.FULL:
        values.setdefault("learning_rate", FULL_LEARNING_RATE)
    total_rows = 0
    if method == FineTuneRun.Method.DPO:
        if preferences is None:
            raise ServiceError(NO_PREFERENCES)
        if datasets:
            raise ServiceError(DPO_NO_DATASETS)
        total_rows = preferences.pairs.count()
        if total_rows == 0:
            raise ServiceError(EMPTY_DATASET.format(name=preferences.name))
    elif preferences is not None:
        raise ServiceError(PREFERENCES_NOT_DPO.format(method=method))
    elif not datasets:
        raise ServiceError(NO_DATASETS)
    seen = set()
    for dataset, rows in datasets:
        if dataset.pk in seen:
            raise ServiceError(DATASET_TWICE.format(name=dataset.name))
        seen.add(dataset.pk)
        count = usable_examples(dataset).count()
        if count == 0:
            raise ServiceError(EMPTY_DATASET.format(name=dataset.name))
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ServiceError(BAD_ROWS.format(name=dataset.name))
        if rows is not None and rows > count:
            raise ServiceError(TOO_MANY_ROWS.format(name=dataset.name, count=count, rows=rows))
        total_rows += count if rows is None else rows
    with transaction.atomic():
        run = FineTuneRun.objects.create(
            base_model=base_model,
            method=method,
            model_name=model_name,
            preferences=preferences,
            template=template,
            report_to=report_to,
            created_by=user if getattr(user, "pk", None) else None,
            **values,
        )
        # An estimate shown until the worker knows (examples longer than max_length drop out).
        held_out = held_out_count(total_rows, run.eval_fraction)
        run.total_steps = steps_for(total_rows - held_out, finetune_run_config(run))
        # The random part keeps a reused id (a restored database) off an old run's checkpoints.
        run.output_path = f"finetune/run-{run.pk}-{secrets.token_hex(4)}"
        run.save(update_fields=["total_steps", "output_path"])
        FineTuneRunDataset.objects.bulk_create(
            FineTuneRunDataset(run=run, dataset=dataset, rows=rows) for dataset, rows in datasets
        )
        audit_record(
            user=user,
            action=Action.FINETUNE_RUN_START,
            obj=run,
            base_model=base_model.name,
            method=method,
            template=str(template),
            datasets=[{"name": d.name, "rows": rows} for d, rows in datasets],
            preferences=preferences.name if preferences else None,
            hyperparameters=values,
            report_to=report_to or None,
        )
        if enqueue:
            lifecycle.enqueue(run)
    return run


def finetune_run_config(run: FineTuneRun):
    """The engine's TrainConfig for a run's stored hyper-parameters."""
    from ..engine.train import TrainConfig

    values = {name: getattr(run, name) for name in FINETUNE_FIELDS}
    # An empty list on the row means "chosen per architecture", which the engine spells None.
    values["target_modules"] = list(run.target_modules) or None
    return TrainConfig(method=run.method, **values)


def finetune_run_examples(run: FineTuneRun) -> list:
    """The run's training mix: each data set's rows (in position order), or ``rows`` of them
    sampled with the run's seed. The same run always gets the same examples in the same order,
    which is what lets a resumed run continue from its checkpoint's place in the data."""
    from ..engine.examples import Example

    rng = random.Random(run.seed)
    examples = []
    for source in run.sources.select_related("dataset").order_by("id"):
        rows = list(
            usable_examples(source.dataset)
            .order_by("position")
            .values_list("instruction", "input", "output")
        )
        if source.rows is not None and source.rows < len(rows):
            rows = rng.sample(rows, source.rows)
        examples.extend(Example(instruction=i, input=x, output=o) for i, x, o in rows)
    return examples


def finetune_run_cancel(*, run: FineTuneRun, user=None) -> FineTuneRun:
    """Queued runs stop at once; a running one stops after its current step, with a checkpoint."""
    return lifecycle.cancel(run, user)


def finetune_run_resume(*, run: FineTuneRun, enqueue: bool = True, user=None) -> FineTuneRun:
    """Queue a failed or cancelled run again; it continues from its last checkpoint.

    Without ``enqueue`` the run is only marked queued, for a caller that trains it itself
    (``manage.py finetune --run ID --inline``, e.g. under ``accelerate launch``).
    """
    return lifecycle.retry(run, user, send=enqueue)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under ``accelerate launch`` / torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


ProgressFn = Callable[[int, int, float | None], None]


def finetune_run_execute(
    *, run_id: int, on_progress: ProgressFn | None = None
) -> FineTuneRun | None:
    """Claim a fine-tune run and train it, from its last checkpoint if it has one.

    Returns None if it was not claimable. Safe to call any number of times for the same run
    (redelivered or requeued tasks). ``on_progress(step, total_steps, loss)`` is called after
    each step (the ``finetune --inline`` progress bar).

    Under ``accelerate launch`` every process calls this; the main one claims the run and
    writes to the database, the others only train.
    """
    rank, world = _distributed()
    if world > 1 and rank != 0:
        lifecycle.drop_stale_connection()
        _finetune_follow(run_id)
        return None

    launches = FineTuneRun.objects.filter(pk=run_id, processes__gt=1).exists() and world == 1
    if on_progress is None or launches:
        # A run of several processes launched from here shows no per-step progress bar.
        return lifecycle.execute(FINETUNE_RUN, run_id)

    def work(run_id: int, worker: str) -> None:
        _finetune(run_id, worker, on_progress)

    if not lifecycle.run_held(FineTuneRun, run_id, work, label=FINETUNE_RUN.label):
        return None
    return FineTuneRun.objects.get(pk=run_id)


def _finetune_inputs(run: FineTuneRun) -> dict:
    """What engine.train needs for a run, but the callbacks."""
    from ..engine.loading import load_tokenizer, resolve_path
    from ..engine.train import qlora_unavailable

    if run.method == FineTuneRun.Method.QLORA and (problem := qlora_unavailable()):
        raise ServiceError(problem)
    base = run.base_model
    model_path = resolve_path(base.name_or_path, settings.MODEL_STORAGE)
    root = Path(settings.MODEL_STORAGE) / run.output_path
    return {
        "model_path": model_path,
        "tokenizer": load_tokenizer(
            model_path, revision=base.revision or None, trust_remote_code=base.trust_remote_code
        ),
        "examples": finetune_run_examples(run),
        "template": as_template(run.template or template_for(base)),
        "config": finetune_run_config(run),
        "checkpoint_dir": root / "checkpoints",
        "output_dir": root / ("adapter" if run.is_lora else "model"),
        "revision": base.revision or None,
        "trust_remote_code": base.trust_remote_code,
        "report": finetune_run_report(run),
    }


def _finetune_work(run_id: int, worker: str) -> None:
    """The kind's work: train here, or launch the run's processes and wait for them."""
    from .processes import finetune_run_launch, launched_here

    run = FineTuneRun.objects.get(pk=run_id)
    if run.processes > 1 and not launched_here() and _distributed()[1] == 1:
        _template_recorded(run, FineTuneRun.objects.filter(pk=run_id, worker=worker))
        finetune_run_launch(run, worker)
    else:
        _finetune(run_id, worker, None)


def finetune_run_train_launched(*, run_id: int, worker: str, rank: int) -> None:
    """One process of a launched run (generation/training/launched.py): rank 0 trains as the
    holding ``worker`` (log, progress, checkpoints, registration), the others only train."""
    if rank == 0:
        _finetune(run_id, worker, None)
    else:
        _finetune_rank(FineTuneRun.objects.select_related("base_model", "template").get(pk=run_id))


def _template_recorded(run: FineTuneRun, mine) -> None:
    if run.template is None:  # queued before runs recorded their template
        run.template = template_for(run.base_model)
        mine.update(template=run.template)


def finetune_run_report(run: FineTuneRun) -> trackers.TrainingReport:
    """Where the run's loss goes besides its log: its own ``report_to``, else the site's
    ``EXPERIMENT_TRACKER``; the tracker's run is named and tagged with the run's id."""
    tracker = trackers.tracker_from(settings, run.report_to or None)
    name = f"finetune-run-{run.pk}"
    tags = {
        "app": "evalsite",
        "app_run": name,
        "finetune_run": str(run.pk),
        "base_model": run.base_model.name,
        "method": run.method,
    }
    try:
        return trackers.training_report(tracker, run_name=name, tags=tags)
    except ValueError as exc:  # its library is not installed on this worker
        raise ServiceError(str(exc)) from None


def _finetune(run_id: int, worker: str, on_progress: ProgressFn | None) -> None:
    from ..engine.train import train

    run = FineTuneRun.objects.select_related("base_model", "template").get(pk=run_id)
    mine = FineTuneRun.objects.filter(pk=run_id, worker=worker)
    _template_recorded(run, mine)

    def on_begin(start) -> None:
        with transaction.atomic():
            # Steps after the checkpoint are trained again; their old entries go.
            FineTuneLog.objects.filter(run_id=run_id, step__gt=start.start_step).delete()
            run.total_steps = start.max_steps
            if not run.target_modules and start.target_modules:
                # Record what "chosen per architecture" chose.
                mine.update(target_modules=list(start.target_modules))
            mine.update(
                total_steps=start.max_steps,
                step=start.start_step,
                resumed_from_step=start.start_step,
                train_examples=start.train_examples,
                eval_examples=start.eval_examples,
                skipped_examples=start.skipped_examples,
            )

    def on_log(entries) -> None:
        FineTuneLog.objects.bulk_create(
            [
                FineTuneLog(
                    run_id=run_id,
                    kind=e.kind,
                    step=e.step,
                    loss=e.loss,
                    learning_rate=e.learning_rate,
                    epoch=e.epoch,
                )
                for e in entries
            ],
            update_conflicts=True,
            unique_fields=["run", "kind", "step"],
            update_fields=["loss", "learning_rate", "epoch"],
        )
        trained = [e for e in entries if e.kind == FineTuneLog.Kind.TRAIN]
        if trained:
            last = trained[-1]
            mine.update(step=last.step, epoch=last.epoch or 0, heartbeat_at=timezone.now())
            if on_progress is not None:
                on_progress(last.step, run.total_steps, last.loss)

    def should_stop() -> bool:
        return not mine.filter(status=FineTuneRun.Status.RUNNING).exists()

    def on_save(path: str, step: int) -> None:
        mine.update(checkpoint=storage_relative(path))

    hooks = {"on_begin": on_begin, "on_log": on_log, "should_stop": should_stop}
    if run.method == FineTuneRun.Method.DPO:
        from .preferences import dpo_run_train

        result = dpo_run_train(run, _finetune_inputs(run), on_save=on_save, **hooks)
    else:
        result = train(**_finetune_inputs(run), on_save=on_save, **hooks)
    mine.update(step=result.global_step, train_tokens=result.total_tokens)
    if getattr(result, "margin_after", None) is not None:
        mine.update(
            metrics={
                "heldout_pairs": result.eval_examples,
                "margin_before": result.margin_before,
                "margin_after": result.margin_after,
            }
        )
    if result.stopped:
        return  # cancelled (or taken over): the status was already set by whoever stopped it
    _finetune_register(run, result.output_dir, worker)


def _finetune_follow(run_id: int) -> None:
    """A non-main process of a multi-GPU run: wait for the main one to claim, then train."""
    deadline = time.monotonic() + 300
    while not FineTuneRun.objects.filter(pk=run_id, status=FineTuneRun.Status.RUNNING).exists():
        if time.monotonic() > deadline:
            raise ServiceError(f"fine-tune run {run_id} was not started by the main process")
        time.sleep(1)
    _finetune_rank(FineTuneRun.objects.select_related("base_model", "template").get(pk=run_id))


def _finetune_rank(run: FineTuneRun) -> None:
    """Train as a process other than the main one: no callbacks, nothing written."""
    from ..engine.train import train

    if run.method == FineTuneRun.Method.DPO:
        from .preferences import dpo_run_train

        dpo_run_train(run, _finetune_inputs(run))
    else:
        train(**_finetune_inputs(run))


def _finetune_register(run: FineTuneRun, output_dir: str, worker: str) -> None:
    """Register the tuned model with the base model's prompt template, pinned to the version
    the run trained with (it generates with that), and mark the run done."""
    base = run.base_model
    name = run.model_name or f"{base.name}-{run.method}-ft{run.pk}"
    relative = storage_relative(output_dir)
    with transaction.atomic():
        held = (
            FineTuneRun.objects.select_for_update()
            .filter(pk=run.pk, worker=worker, status=FineTuneRun.Status.RUNNING)
            .first()
        )
        if held is None:
            return  # cancelled in the last moment: the saved output stays, unregistered
        if LanguageModel.objects.filter(name=name).exists():
            name = f"{name}-ft{run.pk}"
        model = language_model_register(
            name=name,
            # An adapter loads on its base's weights (language_model_load); a fully tuned
            # model is a standalone directory.
            name_or_path=base.name_or_path if run.is_lora else relative,
            revision=base.revision if run.is_lora else "",
            prompt_format=base.prompt_format,
            # The exact version it was trained with: a later edit of the template (a new
            # version) leaves what this model generates with as it was.
            prompt_template=run.template,
            maker=base.maker,
            generation_defaults=base.generation_defaults,
            trust_remote_code=base.trust_remote_code,
            base_model=base if run.is_lora else None,
            adapter_path=relative if run.is_lora else "",
        )
        FineTuneRun.objects.filter(pk=run.pk).update(
            status=FineTuneRun.Status.SUCCEEDED,
            result_model=model,
            finished_at=timezone.now(),
        )


FINETUNE_RUN = kinds.register(
    RunKind(
        model=FineTuneRun,
        label="fine-tune run",
        work=_finetune_work,
        done="step",
        total="total_steps",
        unit="steps",
        cancel_action=Action.FINETUNE_RUN_CANCEL,
        retry_action=Action.FINETUNE_RUN_RESUME,
        retry_word="resumed",
        audit_fields=("step", "checkpoint"),
        name="finetune",
        related=("base_model",),
        # The step it is at, and the epoch (the admin page and its live updates say the same).
        progress_text=lambda run: progress_text(
            run.step, run.total_steps, f", epoch {run.epoch:.2f}", "step "
        ),
        provenance=("base_model", "method", "preferences", "template", *FINETUNE_FIELDS),
    )
)
