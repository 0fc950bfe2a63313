"""Batched answer generation: conversations in, replies out. Plain module, no Django.

Each prompt is a conversation ending with a user turn; it is rendered and tokenized by the one
renderer (``render.encode_prompt``), so generation sees exactly the tokens fine-tuning trained
on. Prompts are sorted by token length (longest first) and generated in left-padded batches.
Longest first because the first batch is then the largest one: a run that does not fit in memory
fails at once instead of an hour in, and neighbouring prompts of similar length waste little
compute on padding.

The template's stop strings end generation in the engine (transformers' ``StopStringCriteria``,
watched so the engine knows where each row stopped); the stored answer is the reply alone
(``render.extract_reply``), with why generation stopped: end of sequence, a stop string, or the
length limit.

Sampling is reproducible per prompt: each prompt draws its tokens from its own random stream,
seeded from (seed, prompt key), so a sampled answer does not depend on which other prompts share
its batch, on the batch size, or on whether a resumed run generates it in a different batch.
(The sampler runs as a logits processor that picks the token and leaves only it possible; the
generation loop then takes it greedily.)
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from . import render
from .params import GENERATION

# What a model's generation defaults or a run may set (declared in engine/params.py).
ALLOWED_PARAMS = tuple(p.name for p in GENERATION)
UNKNOWN_PARAMS = "unknown generation parameter(s): {names}; allowed: " + ", ".join(ALLOWED_PARAMS)
BAD_BATCH_SIZE = "batch_size must be at least 1"
# Used when neither the model's generation config nor the run says how long an answer may be
# (transformers would otherwise stop at max_length=20 tokens, prompt included).
DEFAULT_MAX_NEW_TOKENS = 256
# transformers' own defaults for sampling parameters left unset.
_SAMPLING_DEFAULTS = {
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
}


# Why generation of one answer stopped (the values of Answer.stop_reason).
EOS, STOP_STRING, LENGTH, OTHER = "eos", "stop_string", "length", "other"


@dataclass(frozen=True)
class Prompt:
    """A conversation to answer: user and assistant messages ending with a user turn."""

    key: Any
    messages: tuple[dict, ...]

    @classmethod
    def single(cls, key: Any, question: str) -> Prompt:
        """A one-turn conversation."""
        return cls(key, tuple(render.conversation([question], [])))


@dataclass(frozen=True)
class Generated:
    key: Any
    text: str
    new_tokens: int
    # The generated ids behind ``text``, up to and including the end token or stop string.
    token_ids: tuple[int, ...] = ()
    prompt_text: str = ""
    prompt_tokens: int = 0
    stop_reason: str = OTHER

    @property
    def truncated(self) -> bool:
        return self.stop_reason == LENGTH


def generation_config_for(model: Any, params: dict | None) -> GenerationConfig:
    """The model's generation config overridden by ``params``; unknown keys raise ValueError."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(ALLOWED_PARAMS))
    if unknown:
        raise ValueError(UNKNOWN_PARAMS.format(names=", ".join(unknown)))
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.update(**params)  # validates: impossible values raise ValueError
    if config.max_new_tokens is None:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    return config


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every sequence right-aligned (padding on the left).

    A decoder continues from the last position, so the prompts must end in the same column.
    """
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def prompt_seed(seed: int, key: Any) -> int:
    """The random seed of one prompt's sampling stream: stable across processes and machines."""
    digest = hashlib.sha256(f"{seed}\x00{key!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _PerPromptSampler(LogitsProcessor):
    """Samples each row's next token from that row's own generator; only that token stays possible.

    Uniform numbers come from CPU generators (the same on every device) and pick the token by
    inverse CDF, so the choice depends only on the row's own distribution and random stream.
    """

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float(), dim=-1)
        uniforms = torch.cat([torch.rand(1, generator=g) for g in self.generators])
        cdf = probs.cumsum(dim=-1)
        target = uniforms.to(cdf.device).unsqueeze(1) * cdf[:, -1:]
        choice = torch.searchsorted(cdf, target, right=True).clamp_(max=scores.shape[-1] - 1)
        # Rounding at the very top of the CDF may land on an impossible token: take the mode then.
        possible = probs.gather(1, choice) > 0
        choice = torch.where(possible, choice, probs.argmax(dim=-1, keepdim=True))
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, choice, 0.0)


def _sampling_processors(config: GenerationConfig, seeds: Sequence[int]) -> LogitsProcessorList:
    values = {
        name: getattr(config, name) if getattr(config, name) is not None else default
        for name, default in _SAMPLING_DEFAULTS.items()
    }
    processors = LogitsProcessorList()
    if values["temperature"] != 1.0:
        processors.append(TemperatureLogitsWarper(values["temperature"]))
    if values["top_k"]:
        processors.append(TopKLogitsWarper(top_k=values["top_k"]))
    if values["top_p"] < 1.0:
        processors.append(TopPLogitsWarper(top_p=values["top_p"]))
    if values["min_p"] is not None:
        processors.append(MinPLogitsWarper(min_p=values["min_p"]))
    if values["typical_p"] < 1.0:
        processors.append(TypicalLogitsWarper(mass=values["typical_p"]))
    processors.append(_PerPromptSampler(seeds))
    return processors


def _eos_ids(config: GenerationConfig) -> set[int]:
    eos = config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(token) for token in eos}


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


class _StopWatch(StoppingCriteria):
    """The template's stop strings as a stopping criterion that also records, per row, how many
    new tokens there were when a stop string completed (the rest of the row is padding)."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_width: int, rows: int):
        self.criteria = StopStringCriteria(tokenizer=tokenizer, stop_strings=list(stop_strings))
        self.prompt_width = prompt_width
        self.stopped_at: list[int | None] = [None] * rows

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs) -> torch.BoolTensor:
        done = self.criteria(input_ids, scores, **kwargs)
        new = input_ids.shape[1] - self.prompt_width
        for row, hit in enumerate(done.tolist()):
            if hit and self.stopped_at[row] is None:
                self.stopped_at[row] = new
        return done


def _generate_batch(
    model: Any,
    tokenizer: Any,
    batch: Sequence[tuple[Prompt, str, list[int]]],
    *,
    template: render.Template,
    config: GenerationConfig,
    seed: int,
    pad_id: int,
) -> list[Generated]:
    input_ids, attention_mask = pad_left([ids for _, _, ids in batch], pad_id)
    device = _model_device(model)
    run_config = config
    processors = LogitsProcessorList()
    if config.do_sample:
        run_config = copy.deepcopy(config)
        run_config.do_sample = False
        for name in _SAMPLING_DEFAULTS:
            setattr(run_config, name, None)
        processors = _sampling_processors(config, [prompt_seed(seed, p.key) for p, _, _ in batch])
    stopping = StoppingCriteriaList()
    watch = None
    if template.stop_strings:
        watch = _StopWatch(tokenizer, template.stop_strings, input_ids.shape[1], len(batch))
        stopping.append(watch)
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=run_config,
            logits_processor=processors,
            stopping_criteria=stopping,
        )
    new = output[:, input_ids.shape[1] :].tolist()
    eos_ids = _eos_ids(config)
    done = []
    for row, ((prompt, text, ids), tokens) in enumerate(zip(batch, new, strict=True)):
        eos_at = next((i + 1 for i, token in enumerate(tokens) if token in eos_ids), None)
        stop_at = watch.stopped_at[row] if watch is not None else None
        count = min(n for n in (eos_at, stop_at, len(tokens)) if n is not None)
        decoded = tokenizer.decode(tokens[:count], skip_special_tokens=True)
        reply, cut = render.extract_reply(template, decoded)
        if eos_at is not None and eos_at == count and not cut:
            reason = EOS
        elif cut or stop_at == count:
            reason = STOP_STRING
        elif count >= config.max_new_tokens:
            reason = LENGTH
        else:
            reason = OTHER
        done.append(
            Generated(prompt.key, reply, count, tuple(tokens[:count]), text, len(ids), reason)
        )
    return done


def decoding_of(config: GenerationConfig, params: dict | None, seed: int) -> dict:
    """What a stored answer records of how it was decoded: the parameters in force and the seed."""
    used = {name: getattr(config, name, None) for name in ALLOWED_PARAMS}
    used = {name: value for name, value in used.items() if value is not None}
    used.update(params or {})
    used["do_sample"] = bool(config.do_sample)
    for name, default in _SAMPLING_DEFAULTS.items():
        if not config.do_sample:
            used.pop(name, None)
        elif used.get(name) is None and default is not None:
            used[name] = default  # what the sampler used for a value left unset
    used["seed"] = seed
    return used


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    template: render.Template,
    params: dict | None = None,
    seed: int = 0,
    batch_size: int = 8,
    on_batch: Callable[[list[Generated]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Generated]:
    """One answer per prompt, in the order of ``prompts`` (those done, if stopped early).

    ``on_batch`` is called with each finished batch (commit answers there); ``should_stop`` is
    asked before each batch, and when it returns true generation stops with what is done.
    ``new_tokens`` counts generated tokens up to and including the end token (or the token that
    completed a stop string).
    """
    if batch_size < 1:
        raise ValueError(BAD_BATCH_SIZE)
    if getattr(model, "engine", None) == "vllm":  # weights loaded in vLLM (engine/vllm_engine.py)
        from .vllm_engine import generate_with_vllm

        return generate_with_vllm(
            model,
            tokenizer,
            prompts,
            template=template,
            params=params,
            seed=seed,
            batch_size=batch_size,
            on_batch=on_batch,
            should_stop=should_stop,
        )
    config = prepared_config(model, tokenizer, params)
    pad_id = config.pad_token_id

    encoded = []
    for index, prompt in enumerate(prompts):
        text = render.render_prompt(template, prompt.messages, tokenizer)
        encoded.append((index, prompt, text, render.tokenize(tokenizer, text)))
    encoded.sort(key=lambda item: -len(item[3]))  # stable: equal lengths keep their order

    results: list[tuple[int, Generated]] = []
    for start in range(0, len(encoded), batch_size):
        if should_stop is not None and should_stop():
            break
        chunk = encoded[start : start + batch_size]
        batch = [(prompt, text, ids) for _, prompt, text, ids in chunk]
        done = _generate_batch(
            model, tokenizer, batch, template=template, config=config, seed=seed, pad_id=pad_id
        )
        results.extend((item[0], g) for item, g in zip(chunk, done, strict=True))
        if on_batch is not None:
            on_batch(done)
    results.sort(key=lambda item: item[0])
    return [generated for _, generated in results]


def prepared_config(model: Any, tokenizer: Any, params: dict | None) -> GenerationConfig:
    """``generation_config_for`` with the end and padding tokens filled in from the tokenizer
    (and the tokenizer set to pad on the left)."""
    config = generation_config_for(model, params)
    tokenizer.padding_side = "left"
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = pad_id
    return config
