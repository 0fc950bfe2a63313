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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, make_dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalsite.trackers import TrainingReport

from .examples import AnswerOnlyCollator, Example, encode_example, split_examples
from .params import FINETUNE, Param
from .render import Template
from .trainer import (
    LogEntry,
    TrainStart,
    bf16_ok,
    fit_tracked,
    free_cuda_cache,
    kept_rows,
    make_callback,
    trainer_arguments,
)

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


def lora_config(model: Any, config: TrainConfig) -> tuple[Any, list[str]]:
    """peft's LoRA settings for ``model`` from the run's (its target modules, or the
    architecture's), and the target modules chosen."""
    from peft import LoraConfig

    targets = list(config.target_modules or lora_target_modules(model.config.model_type))
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    return lora, targets


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

    from peft import get_peft_model, prepare_model_for_kbit_training

    if config.method == QLORA:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    elif config.gradient_checkpointing:
        # The frozen embeddings give no grad to checkpointed blocks without this.
        model.enable_input_require_grads()
    lora, targets = lora_config(model, config)
    return get_peft_model(model, lora), targets


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
    trainer, outcome = fit_tracked(
        partial(
            Trainer,
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows or None,
            data_collator=AnswerOnlyCollator(pad_id),
            processing_class=tokenizer,
            callbacks=[bridge, *callbacks],
        ),
        bridge,
        checkpoint_dir,
        output_dir,
        resume=resume,
        report=report,
    )
    seen = trainer.state.num_input_tokens_seen
    result = TrainResult(**outcome, train_tokens=int(seen - bridge.tokens_at_begin))
    del trainer, model
    free_cuda_cache()
    return result


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
