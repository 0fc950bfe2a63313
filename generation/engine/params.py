"""The two parameter sets, declared once as plain data (no Django).

``GENERATION``: what a model's generation defaults or a run may set (the rest of transformers'
GenerationConfig keeps the model's own values). Beam search is left out: one answer per question,
and the per-prompt sampler assumes one sequence per prompt.

``FINETUNE``: the fine-tune hyper-parameters with their defaults. The run model's fields, the
engine's ``TrainConfig``, the API, the admin form and the ``finetune`` command are all built from
it; ``generation/params.py`` checks values against it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float, bool, or list (of non-empty strings)
    default: object = None
    low: float | None = None
    high: float | None = None
    # Whether ``low`` / ``high`` themselves are outside the allowed range.
    low_open: bool = False
    high_open: bool = False
    help: str = ""
    # The ``finetune`` command's option, where it is not the name.
    option: str = ""

    @property
    def rule(self) -> str:
        """The allowed values, as error messages say them."""
        if self.kind is bool:
            return "true or false"
        if self.kind is list:
            return "a list of module names"
        whole = "a whole number" if self.kind is int else ""
        if self.low is not None and self.high is not None:
            upto = "up to (not including)" if self.high_open else "to"
            span = f"from {self.low:g} {upto} {self.high:g}"
            return f"{whole} {span}" if whole else span
        if self.low is not None:
            span = f"above {self.low:g}" if self.low_open else f"{self.low:g} or more"
            return f"{whole}, {span}" if whole else span
        return whole or "a number"

    def allows(self, value: float) -> bool:
        """Whether a number of the right kind lies in the range."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


GENERATION = (
    Param("max_new_tokens", int, low=1, high=8192),
    Param("min_new_tokens", int, low=0, high=8192),
    Param("do_sample", bool),
    Param("temperature", float, low=0, high=5),
    Param("top_p", float, low=0, high=1),
    Param("top_k", int, low=0),
    Param("min_p", float, low=0, high=1),
    Param("typical_p", float, low=0, high=1),
    Param("repetition_penalty", float, low=0, low_open=True),
    Param("no_repeat_ngram_size", int, low=0),
)

FINETUNE = (
    Param("learning_rate", float, 2e-4, low=0, low_open=True, option="lr"),
    Param("epochs", float, 3.0, low=0, low_open=True),
    Param(
        "max_steps",
        int,
        0,
        low=0,
        help="Stop after this many optimizer steps (0: as many as the epochs take)",
    ),
    Param("batch_size", int, 4, low=1, help="Per device"),
    Param("gradient_accumulation", int, 4, low=1, option="grad_accum"),
    Param("max_length", int, 512, low=16, help="Tokens per example"),
    Param(
        "warmup_ratio",
        float,
        0.03,
        low=0,
        high=1,
        high_open=True,
        help="Fraction of steps warming up",
        option="warmup",
    ),
    Param("weight_decay", float, 0.0, low=0),
    Param("seed", int, 0),
    Param("eval_fraction", float, 0.05, low=0, high=0.5, help="Held out for the per-epoch loss"),
    Param("lora_r", int, 8, low=1),
    Param("lora_alpha", int, 16, low=1),
    Param("lora_dropout", float, 0.05, low=0, high=1, high_open=True),
    Param("target_modules", list, (), help="LoRA target modules (empty: per architecture)"),
    Param("gradient_checkpointing", bool, False),
    Param("save_steps", int, 100, low=1, help="Checkpoint interval (steps)"),
    Param("save_total_limit", int, 2, low=1, help="Checkpoints kept"),
    Param(
        "processes",
        int,
        1,
        low=1,
        high=64,
        help="Processes (one per GPU) training the run in parallel; the batch size is per process",
    ),
    Param(
        "dpo_beta",
        float,
        0.1,
        low=0,
        low_open=True,
        help="DPO only: how far the tuned policy may move from the reference model",
    ),
)
