"""The transformers ``Trainer`` plumbing that supervised fine-tuning (``train.py``) and
preference tuning (``dpo.py``) share: the arguments a run's settings give, the callback that
passes the loss log, progress and checkpoints out and stops every process at the same step,
the experiment tracker's session, and fitting from the last complete checkpoint.

Plain module, no Django: ``evalsite.trackers`` is imported only where a tracker is used (the
``evalsite`` package loads Celery and Django).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalsite.trackers import TrainingReport

    from .train import TrainConfig

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class LogEntry:
    kind: str  # "train" (one per optimizer step) or "eval" (held-out loss, once per epoch)
    step: int
    loss: float
    learning_rate: float | None
    epoch: float | None


@dataclass(frozen=True)
class TrainStart:
    max_steps: int
    start_step: int  # > 0 when resumed from a checkpoint
    train_examples: int
    eval_examples: int
    skipped_examples: int  # their prompt alone fills max_length
    target_modules: tuple[str, ...] = ()  # what LoRA adapts (empty for full fine-tuning)


def bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# --- checkpoints -------------------------------------------------------------------------------


def last_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[str, int] | None:
    """(path, step) of the newest complete checkpoint, or None."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = []
    for child in root.iterdir():
        match = CHECKPOINT_RE.match(child.name)
        # trainer_state.json is written last: a checkpoint without it was interrupted.
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), str(child)))
    if not found:
        return None
    step, path = max(found)
    return path, step


# --- the trainer ----------------------------------------------------------------------------


def _distributed_any(flag: bool) -> bool:
    """True on every process if it is true on the main one (a no-op without torch.distributed).

    Only the main process asks the database whether to stop; all processes must stop at the
    same step or DDP waits forever for the one that kept going.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = (
        torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    )
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def _no_report() -> TrainingReport:
    """No tracker. (``evalsite.trackers`` is imported here, not with this module: the
    ``evalsite`` package loads Celery and Django, and this engine stays free of them.)"""
    from evalsite.trackers import NO_REPORT

    return NO_REPORT


def trainer_arguments(
    config: TrainConfig, *, evaluate: bool, report: TrainingReport | None = None
) -> dict:
    """The Trainer arguments a run's settings give, shared by SFT (TrainingArguments) and DPO
    (TRL's DPOConfig, a subclass): batch, schedule, seed, logging every step, checkpoints, and
    the experiment tracker the loss also goes to (``evalsite.trackers.training_report``)."""
    import torch

    report = report or _no_report()

    return {
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps > 0 else -1,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a fraction of all steps
        "lr_scheduler_type": "linear",
        "weight_decay": config.weight_decay,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "eval_strategy": "epoch" if evaluate else "no",
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "bf16": bf16_ok(),
        # TRL turns checkpointing on by default; the run says (the new name: no warning).
        "activation_checkpointing": config.gradient_checkpointing,
        "dataloader_pin_memory": torch.cuda.is_available(),
        "include_num_input_tokens_seen": "non_padding",
        "report_to": list(report.report_to),
        "run_name": report.run_name,
        "disable_tqdm": True,
    }


def make_callback(
    *,
    on_log: Callable[[list[LogEntry]], None] | None,
    should_stop: Callable[[], bool] | None,
    on_begin: Callable[[TrainStart], None] | None,
    on_save: Callable[[str, int], None] | None,
    counts: tuple[int, int, int],
    targets: Sequence[str],
):
    from transformers import TrainerCallback

    class _Bridge(TrainerCallback):
        """Passes the loss log, progress and checkpoints out; stops when asked (cancel)."""

        def __init__(self) -> None:
            self.stopped = False
            self.tokens_at_begin = 0
            self.counts = counts  # (train, held-out, skipped) examples, for the result
            self.targets = list(targets)

        def on_train_begin(self, args, state, control, **kwargs):
            self.tokens_at_begin = state.num_input_tokens_seen
            if on_begin is not None and state.is_world_process_zero:
                on_begin(TrainStart(state.max_steps, state.global_step, *counts, tuple(targets)))

        def on_step_end(self, args, state, control, **kwargs):
            wanted = bool(should_stop()) if should_stop and state.is_world_process_zero else False
            if _distributed_any(wanted):
                # Stop after this step, with a checkpoint of it: resuming loses nothing.
                self.stopped = True
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.stopped:
                control.should_evaluate = False  # a cancelled run is not worth an evaluation
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_log is None or not logs or not state.is_world_process_zero:
                return
            entries = []
            if "loss" in logs:
                entries.append(
                    LogEntry("train", state.global_step, float(logs["loss"]),
                             logs.get("learning_rate"), state.epoch)
                )  # fmt: skip
            if "eval_loss" in logs:
                entries.append(
                    LogEntry("eval", state.global_step, float(logs["eval_loss"]), None, state.epoch)
                )
            if entries:
                on_log(entries)

        def on_save(self, args, state, control, **kwargs):
            if on_save is not None and state.is_world_process_zero:
                path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                on_save(path, state.global_step)

    return _Bridge()


def kept_rows(train_all: list, eval_all: list) -> tuple[list, list, int]:
    """The encoded training and held-out rows that fit ``max_length`` (an encoder gives None for
    one whose prompt alone fills it), and how many did not."""
    train_rows = [r for r in train_all if r is not None]
    eval_rows = [r for r in eval_all if r is not None]
    return train_rows, eval_rows, len(train_all) + len(eval_all) - len(train_rows) - len(eval_rows)


def fit_and_save(
    trainer: Any,
    bridge: Any,
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    resume: bool,
) -> dict[str, Any]:
    """Train (from the last complete checkpoint in ``checkpoint_dir`` when resuming) and save to
    ``output_dir`` unless ``should_stop`` stopped it. Returns the fields SFT's and DPO's results
    share (``bridge`` is ``make_callback``'s, holding the example counts and LoRA targets)."""
    from transformers import PrinterCallback

    # The loss goes to on_log (the database); a worker's log needs no copy of every step.
    trainer.remove_callback(PrinterCallback)
    found = last_checkpoint(checkpoint_dir) if resume else None
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=found[0] if found else None)
    seconds = time.monotonic() - started
    saved = None
    if not bridge.stopped:
        trainer.save_model(os.fspath(output_dir))
        saved = os.fspath(output_dir)
    state = trainer.state
    return {
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "stopped": bridge.stopped,
        "resumed_from_step": found[1] if found else 0,
        "train_examples": bridge.counts[0],
        "eval_examples": bridge.counts[1],
        "skipped_examples": bridge.counts[2],
        "total_tokens": int(state.num_input_tokens_seen),
        "train_seconds": seconds,
        "output_dir": saved,
        "target_modules": bridge.targets,
    }


def fit_tracked(
    build: Callable[[], Any],
    bridge: Any,
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    resume: bool,
    report: TrainingReport | None,
) -> tuple[Any, dict[str, Any]]:
    """``build()`` the trainer inside the tracker's session (its integration is made with the
    trainer and reads its settings then) and ``fit_and_save`` it: the trainer and the outcome."""
    from evalsite.trackers import training_session  # lazily: evalsite's package loads Django

    with training_session(report or _no_report()):
        trainer = build()
        outcome = fit_and_save(trainer, bridge, checkpoint_dir, output_dir, resume=resume)
    return trainer, outcome


def free_cuda_cache() -> None:
    """Give the GPU memory a finished run held back (call after dropping the trainer and model)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
