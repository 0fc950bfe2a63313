"""Preference tuning (DPO) of a causal LM on (prompt, chosen, rejected) pairs with TRL.

Plain module, no Django, the twin of ``train.py`` (supervised fine-tuning): pairs and settings
in, checkpoints, a saved adapter (LoRA by default) and a loss log out, through the same
callbacks, checkpoint directory and resume as SFT runs.

Tokenization is ours, not TRL's. TRL tokenizes a text prompt with the tokenizer's defaults
(``add_special_tokens=True``) and leaves the end of the answer to the tokenizer's text; here a
pair is tokenized exactly as a training example of ``examples.py`` is (the prompt with
``render.encode_prompt``, the answer as the template writes it, the end token appended as its
id), so the tuned model learns on the very tokens generation will give it. The trainer then
receives ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` and skips its own preparation.

With LoRA the reference model is the base with the adapter disabled (TRL does this when it is
given the plain model and a peft config), so no second copy of the weights is held.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalsite.trackers import TrainingReport

from . import render
from .examples import IGNORE_INDEX, Example, encode_example, split_examples
from .train import FULL, LORA, TrainConfig, lora_config
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

NO_PAIRS = "no preference pairs are left (every prompt was longer than max_length?)"
SAME_ANSWERS = "pair {index}: chosen and rejected are the same text"


@dataclass(frozen=True)
class PreferenceExample:
    """One preference pair. ``prompt`` is already rendered (the JSONL a tool such as TRL reads);
    with ``question`` set, the pair is rendered again from it with the tuned model's template."""

    prompt: str
    chosen: str
    rejected: str
    question: str = ""


@dataclass
class DpoResult:
    global_step: int
    max_steps: int
    stopped: bool
    resumed_from_step: int
    train_examples: int
    eval_examples: int
    skipped_examples: int
    total_tokens: int
    train_seconds: float
    output_dir: str | None
    target_modules: list[str] = field(default_factory=list)
    # Mean log-probability margin (chosen minus rejected) on the held-out pairs, before and
    # after training; None when nothing is held out.
    margin_before: float | None = None
    margin_after: float | None = None


# --- tokens ------------------------------------------------------------------------------------


def _answer_ids(tokenizer: Any, template: render.Template | None, prompt: str, answer: str):
    """An answer after a rendered prompt, tokenized the way ``encode_example`` does it."""
    prompt_ids = render.tokenize(tokenizer, prompt)
    full = render.tokenize(tokenizer, prompt + answer)
    ids = full[len(prompt_ids) :] if full[: len(prompt_ids)] == prompt_ids else None
    if ids is None:
        ids = render.tokenize(tokenizer, answer)
    if (template is None or template.end_with_eos) and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return prompt_ids, ids


def encode_pair(
    tokenizer: Any, template: render.Template | None, pair: PreferenceExample, *, max_length: int
) -> dict | None:
    """``prompt_ids``, ``chosen_ids``, ``rejected_ids`` of a pair; None if its prompt alone
    fills ``max_length`` (prompt plus answer is cut at ``max_length``, as in SFT)."""
    if pair.question and template is not None:
        sides = []
        for answer in (pair.chosen, pair.rejected):
            row = encode_example(
                tokenizer, template, Example(pair.question, answer), max_length=max_length
            )
            if row is None:
                return None
            n_prompt = next(
                (i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX),
                len(row["labels"]),
            )
            sides.append((row["input_ids"][:n_prompt], row["input_ids"][n_prompt:]))
        (prompt_ids, chosen_ids), (_, rejected_ids) = sides
    else:
        prompt_ids, chosen_ids = _answer_ids(tokenizer, template, pair.prompt, pair.chosen)
        _, rejected_ids = _answer_ids(tokenizer, template, pair.prompt, pair.rejected)
        if len(prompt_ids) >= max_length:
            return None
        room = max_length - len(prompt_ids)
        chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def encode_pairs(
    tokenizer: Any,
    template: render.Template | None,
    pairs: Sequence[PreferenceExample],
    *,
    max_length: int,
) -> list[dict | None]:
    return [encode_pair(tokenizer, template, p, max_length=max_length) for p in pairs]


# --- the margin --------------------------------------------------------------------------------


def _sequence_logp(model: Any, prompt_ids: list[int], answer_ids: list[int]) -> float:
    import torch

    ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
    logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    picked = logps.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(picked[len(prompt_ids) - 1 :].sum())


def logprob_margins(model: Any, rows: Sequence[dict]) -> list[float]:
    """Per pair: log p(chosen | prompt) - log p(rejected | prompt), summed over answer tokens."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [
                _sequence_logp(model, r["prompt_ids"], r["chosen_ids"])
                - _sequence_logp(model, r["prompt_ids"], r["rejected_ids"])
                for r in rows
            ]
    finally:
        model.train(was_training)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --- training ----------------------------------------------------------------------------------


def _load(model_path: str, *, revision: str | None, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        options["revision"] = revision
    options["dtype"] = torch.bfloat16 if bf16_ok() else torch.float32
    return AutoModelForCausalLM.from_pretrained(model_path, **options)


def _trainer_class():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """TRL's trainer on rows this module tokenized (``encode_pair``)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PretokenizedDPOTrainer


def train_dpo(
    *,
    model_path: str,
    tokenizer: Any,
    pairs: Sequence[PreferenceExample],
    template: render.Template | None,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    method: str = LORA,
    revision: str | None = None,
    trust_remote_code: bool = False,
    resume: bool = True,
    on_log: Callable[[list[LogEntry]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_begin: Callable[[TrainStart], None] | None = None,
    on_save: Callable[[str, int], None] | None = None,
    callbacks: Sequence[Any] = (),
    report: TrainingReport | None = None,
) -> DpoResult:
    """DPO-tune ``model_path`` on ``pairs`` (``config.dpo_beta``; LoRA unless ``method`` is
    ``full``). ``config.eval_fraction`` of the pairs (seeded) is held out: the DPO loss is
    evaluated on it each epoch, and the mean log-probability margin is measured on it before
    and after training. Checkpoints, resume and the callbacks are those of ``train.train``.
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig

    for index, pair in enumerate(pairs):
        if pair.chosen == pair.rejected:
            raise ValueError(SAME_ANSWERS.format(index=index))
    train_set, eval_set = split_examples(pairs, config.eval_fraction, config.seed)
    train_all = encode_pairs(tokenizer, template, train_set, max_length=config.max_length)
    eval_all = encode_pairs(tokenizer, template, eval_set, max_length=config.max_length)
    train_rows, eval_rows, skipped = kept_rows(train_all, eval_all)
    if not train_rows:
        raise ValueError(NO_PAIRS)

    set_seed(config.seed)
    model = _load(model_path, revision=revision, trust_remote_code=trust_remote_code)
    peft_config, targets = (None, []) if method == FULL else lora_config(model, config)
    margin_before = mean(logprob_margins(model, eval_rows))
    args = DPOConfig(
        output_dir=os.fspath(checkpoint_dir),
        beta=config.dpo_beta,
        max_length=config.max_length,
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
            _trainer_class(),
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[bridge, *callbacks],
        ),
        bridge,
        checkpoint_dir,
        output_dir,
        resume=resume,
        report=report,
    )
    margin_after = None if bridge.stopped else mean(logprob_margins(trainer.model, eval_rows))
    result = DpoResult(**outcome, margin_before=margin_before, margin_after=margin_after)
    del trainer, model
    free_cuda_cache()
    return result
