"""Supervised fine-tuning (LoRA, QLoRA or full) of a causal LM on instruction data.

Plain module, no Django: examples and settings in, checkpoints, a saved model or adapter and a
loss log out. The Django layer (``generation.training.finetune``) feeds it rows from the database
and writes the log, progress and cancellation back through the callbacks it passes in.

Why transformers' ``Trainer`` and not TRL's ``SFTTrainer``: what matters most here is that a
training example is rendered and tokenized *exactly* as the generation engine will later render
and tokenize the prompt (``render.encode_prompt``, the one renderer), with the loss on the
answer tokens only. SFTTrainer brings its own rendering (chat templates, prompt/completion
columns, its own end-token handling), so fitting our templates into it means undoing part of what
it does. ``Trainer`` with our own rendering, collator and callbacks is shorter and every step is
visible; it still gives us accelerate (device placement, mixed precision, DDP / FSDP / DeepSpeed
under ``accelerate launch``), checkpoints and ``resume_from_checkpoint``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalsite.trackers import TrainingReport

from .examples import AnswerOnlyCollator, Example, encode_example, split_examples
from .params import FINETUNE, Param
from .render import Template

LORA = "lora"
QLORA = "qlora"
FULL = "full"
METHODS = (LORA, FULL, QLORA)

UNKNOWN_METHOD = "unknown fine-tuning method {method!r}; expected one of: " + ", ".join(METHODS)
QLORA_UNAVAILABLE = (
    "QLoRA needs a CUDA GPU and the bitsandbytes package; this machine has {missing}. "
    "Use method 'lora' or 'full'."
)
NO_TARGET_MODULES = (
    "no default LoRA target modules for architecture {model_type!r}; "
    "set the run's target modules (e.g. ['q_proj', 'v_proj'])"
)
NO_EXAMPLES = "no training examples are left (every example was longer than max_length?)"

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _config_field(param: Param) -> tuple:
    # A list parameter (target modules) is None here when unset: chosen per architecture.
    if param.kind is list:
        return param.name, list[str] | None, None
    return param.name, param.kind, param.default


# The method and the hyper-parameters declared in engine/params.py, with their defaults.
TrainConfig = make_dataclass(
    "TrainConfig", [("method", str, LORA), *(_config_field(p) for p in FINETUNE)]
)
TrainConfig.__module__ = __name__


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


@dataclass
class TrainResult:
    global_step: int
    max_steps: int
    stopped: bool  # stopped early by should_stop (a checkpoint holds the state)
    resumed_from_step: int
    train_examples: int
    eval_examples: int
    skipped_examples: int
    train_tokens: int  # non-padding tokens seen in this call (resumed runs: since the resume)
    total_tokens: int  # non-padding tokens seen by the run, earlier attempts included
    train_seconds: float
    output_dir: str | None  # the saved adapter or model; None when stopped early
    target_modules: list[str] = field(default_factory=list)


# --- models ------------------------------------------------------------------------------------


def qlora_unavailable() -> str | None:
    """Why QLoRA cannot run here (None when it can)."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("no bitsandbytes")
    return QLORA_UNAVAILABLE.format(missing=" and ".join(missing)) if missing else None


def lora_target_modules(model_type: str) -> list[str]:
    """The layers LoRA adapts for an architecture (peft's table: GPT-NeoX -> query_key_value)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    modules = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not modules:
        raise ValueError(NO_TARGET_MODULES.format(model_type=model_type))
    return list(modules)


def bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_trainable_model(
    model_path: str, config: TrainConfig, *, revision: str | None, trust_remote_code: bool
) -> tuple[Any, list[str]]:
    """The model to train and the LoRA target modules used (empty for full fine-tuning).

    Full fine-tuning keeps float32 weights (bf16 autocast on a GPU that has it); LoRA freezes the
    base, so on such a GPU its weights load in bf16. Placement is left to the Trainer
    (accelerate), except for QLoRA, whose 4-bit weights must be put on this process's GPU.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if config.method not in METHODS:
        raise ValueError(UNKNOWN_METHOD.format(method=config.method))
    options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        options["revision"] = revision
    if config.method == QLORA:
        problem = qlora_unavailable()
        if problem:
            raise ValueError(problem)
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16_ok() else torch.float16,
        )
        options["device_map"] = {"": PartialState().local_process_index}
    elif config.method == LORA and bf16_ok():
        options["dtype"] = torch.bfloat16
    else:
        options["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, **options)
    if config.method == FULL:
        return model, []

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == QLORA:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    elif config.gradient_checkpointing:
        # The frozen embeddings give no grad to checkpointed blocks without this.
        model.enable_input_require_grads()
    targets = list(config.target_modules or lora_target_modules(model.config.model_type))
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    return get_peft_model(model, lora), targets


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


# --- training ----------------------------------------------------------------------------------


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


def train(
    *,
    model_path: str,
    tokenizer: Any,
    examples: Sequence[Example],
    template: Template,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    revision: str | None = None,
    trust_remote_code: bool = False,
    resume: bool = True,
    on_log: Callable[[list[LogEntry]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_begin: Callable[[TrainStart], None] | None = None,
    on_save: Callable[[str, int], None] | None = None,
    callbacks: Sequence[Any] = (),
    report: TrainingReport | None = None,
) -> TrainResult:
    """Fine-tune ``model_path`` on ``examples`` rendered with prompt template ``template``.

    Checkpoints go to ``checkpoint_dir`` every ``config.save_steps`` optimizer steps; with
    ``resume`` a newer run picks up from the last complete one there (model, optimizer,
    scheduler, random state and data position), so the total number of steps is the same as
    for an uninterrupted run. On success the adapter (LoRA) or the whole model (full) and the
    tokenizer are saved to ``output_dir``.

    Callbacks (all optional, called on the main process only): ``on_begin(TrainStart)`` once
    the step count is known; ``on_log(entries)`` after each step and each held-out evaluation;
    ``should_stop()`` after each step: true stops training there after saving a checkpoint;
    ``on_save(path, step)`` after each checkpoint. ``report``: the experiment tracker the loss
    also goes to, through transformers' own integration (``evalsite.trackers``).
    """
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    train_set, eval_set = split_examples(examples, config.eval_fraction, config.seed)
    rendered_train = [
        encode_example(tokenizer, template, e, max_length=config.max_length) for e in train_set
    ]
    rendered_eval = [
        encode_example(tokenizer, template, e, max_length=config.max_length) for e in eval_set
    ]
    train_rows, eval_rows, skipped = kept_rows(rendered_train, rendered_eval)
    if not train_rows:
        raise ValueError(NO_EXAMPLES)

    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    # LoRA's initial weights are random: seeded, the same run starts from the same adapter.
    set_seed(config.seed)
    model, targets = load_trainable_model(
        model_path, config, revision=revision, trust_remote_code=trust_remote_code
    )
    args = TrainingArguments(
        output_dir=os.fspath(checkpoint_dir),
        remove_unused_columns=False,
        **trainer_arguments(config, evaluate=bool(eval_rows), report=report),
    )
    bridge = make_callback(
        on_log=on_log,
        should_stop=should_stop,
        on_begin=on_begin,
        on_save=on_save,
        counts=(len(train_rows), len(eval_rows), skipped),
        targets=targets,
    )
    # The tracker's integration is made with the trainer and reads its settings then.
    from evalsite.trackers import training_session  # lazily: evalsite's package loads Django

    with training_session(report or _no_report()):
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows or None,
            data_collator=AnswerOnlyCollator(pad_id),
            processing_class=tokenizer,
            callbacks=[bridge, *callbacks],
        )
        outcome = fit_and_save(trainer, bridge, checkpoint_dir, output_dir, resume=resume)
    seen = trainer.state.num_input_tokens_seen
    result = TrainResult(**outcome, train_tokens=int(seen - bridge.tokens_at_begin))
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


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


def steps_for(n_train: int, config: TrainConfig, world_size: int | None = None) -> int:
    """Optimizer steps a run of ``n_train`` examples takes (as the Trainer counts them) over
    ``world_size`` processes (default: the config's ``processes``)."""
    if config.max_steps > 0:
        return config.max_steps
    world_size = world_size or config.processes
    batches = math.ceil(n_train / (config.batch_size * world_size))
    per_epoch = max(
        1, batches // config.gradient_accumulation + int(batches % config.gradient_accumulation > 0)
    )
    return math.ceil(config.epochs * per_epoch)


# --- merging -----------------------------------------------------------------------------------


def merge_adapter(
    base_path: str,
    adapter_path: str,
    output_dir: str | os.PathLike,
    *,
    tokenizer: Any,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> str:
    """Fold a LoRA adapter into its base weights and save a standalone model (and tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": "auto"}
    if revision:
        options["revision"] = revision
    base = AutoModelForCausalLM.from_pretrained(base_path, **options)
    merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    out = os.fspath(output_dir)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
