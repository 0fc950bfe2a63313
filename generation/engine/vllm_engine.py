"""vLLM's offline engine as the generation backend of local weights on GPU workers.

Plain module, no Django. Which engine generates is chosen per run (``engine_for``): forced to
``transformers`` or ``vllm``, or ``auto``: vLLM where it is installed and a CUDA GPU is visible,
transformers' ``generate`` (engine/generate.py) elsewhere. Either way the prompts are the same
token ids (``render.render_prompt`` then ``render.tokenize``, the one renderer), the template's
stop strings end a reply, the reply is cut by ``render.extract_reply``, and each answer records
its token counts and why it stopped, so an answer's provenance reads the same whichever engine
made it (the run records which one did).

vLLM batches continuously by itself: prompts go to it in chunks only so that answers are
committed as they come and a cancel is seen between chunks. Greedy answers match transformers'
up to floating-point ties; a sampled answer draws from a stream seeded per prompt (vLLM's own
sampler, so not the same tokens as transformers' for the same seed).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import render
from .generate import (
    EOS,
    LENGTH,
    STOP_STRING,
    Generated,
    Prompt,
    _eos_ids,
    prepared_config,
    prompt_seed,
)

AUTO, TRANSFORMERS, VLLM, ENDPOINT = "auto", "transformers", "vllm", "endpoint"
ENGINES = (AUTO, TRANSFORMERS, VLLM)
UNKNOWN_ENGINE = "unknown generation engine {engine!r}; expected one of: " + ", ".join(ENGINES)
VLLM_MISSING = (
    "engine 'vllm' was asked for, but vLLM is not installed on this machine "
    "(install it on the GPU workers: pip install vllm); use engine 'transformers' or 'auto'"
)
VLLM_NO_GPU = "engine 'vllm' needs a CUDA GPU; this worker sees none"
VLLM_UNSUPPORTED = "vLLM has no {names}: leave it unset or use engine 'transformers'"
# Prompts handed to vLLM at once: large enough for its batching, small enough that answers are
# committed (and a cancel seen) every few seconds.
CHUNK = 256


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_problem(requested: str) -> str | None:
    """Why a run cannot ask for ``requested`` from here (None when it can).

    Like QLoRA's check, only the package is required where the run is made: a deployment that
    installs vLLM is one whose GPU workers have it; the worker checks for the GPU itself.
    """
    if requested not in ENGINES:
        return UNKNOWN_ENGINE.format(engine=requested)
    if requested == VLLM and not vllm_installed():
        return VLLM_MISSING
    return None


def engine_for(requested: str) -> str:
    """The engine a worker uses for ``requested`` (``auto`` resolved here); ValueError when a
    forced vLLM cannot run on this machine."""
    if requested == TRANSFORMERS:
        return TRANSFORMERS
    import torch

    if requested == VLLM:
        if not vllm_installed():
            raise ValueError(VLLM_MISSING)
        if not torch.cuda.is_available():
            raise ValueError(VLLM_NO_GPU)
        return VLLM
    if requested != AUTO:
        raise ValueError(UNKNOWN_ENGINE.format(engine=requested))
    return VLLM if vllm_installed() and torch.cuda.is_available() else TRANSFORMERS


@dataclass
class VllmModel:
    """Loaded weights in vLLM, shaped like what the callers read of a transformers model:
    ``config`` (the context length) and ``generation_config`` (the model's decoding defaults)."""

    llm: Any
    config: Any
    generation_config: Any
    lora: Any = None  # a LoRARequest when the model is an adapter on its base
    engine: str = VLLM


def load_vllm(
    path: str,
    *,
    adapter_path: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    gpu_memory_utilization: float = 0.85,
    max_lora_rank: int = 64,
) -> VllmModel:
    """``path`` (and a LoRA adapter on it) in vLLM's offline engine on this worker's GPU(s)."""
    from transformers import AutoConfig, GenerationConfig
    from vllm import LLM

    options: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "revision": revision,
        "trust_remote_code": trust_remote_code,
        "gpu_memory_utilization": gpu_memory_utilization,
        "seed": 0,
    }
    lora = None
    if adapter_path:
        from vllm.lora.request import LoRARequest

        options.update(enable_lora=True, max_lora_rank=max_lora_rank)
        lora = LoRARequest("adapter", 1, adapter_path)
    llm = LLM(**options)
    config = AutoConfig.from_pretrained(
        path, revision=revision, trust_remote_code=trust_remote_code
    )
    try:
        generation_config = GenerationConfig.from_pretrained(path, revision=revision)
    except OSError:  # a model without generation_config.json
        generation_config = GenerationConfig.from_model_config(config)
    return VllmModel(llm, config, generation_config, lora)


def sampling_params(config: Any, template: render.Template, seed: int | None) -> Any:
    """vLLM's SamplingParams for a transformers GenerationConfig (``prepared_config``'s)."""
    from vllm import SamplingParams

    unsupported = [
        name
        for name, off in (("typical_p", 1.0), ("no_repeat_ngram_size", 0))
        if getattr(config, name, None) not in (None, off)
    ]
    if unsupported:
        raise ValueError(VLLM_UNSUPPORTED.format(names=", ".join(unsupported)))
    sampling = bool(config.do_sample)
    return SamplingParams(
        n=1,
        max_tokens=config.max_new_tokens,
        min_tokens=config.min_new_tokens or 0,
        temperature=(config.temperature if config.temperature is not None else 1.0)
        if sampling
        else 0.0,
        top_p=(config.top_p or 1.0) if sampling else 1.0,
        top_k=(config.top_k or 0) if sampling else 0,
        min_p=(config.min_p or 0.0) if sampling else 0.0,
        repetition_penalty=config.repetition_penalty or 1.0,
        seed=seed if sampling else None,
        stop=list(template.stop_strings),
        # The stop string stays in the text, as transformers' does: extract_reply cuts it.
        include_stop_str_in_output=True,
        stop_token_ids=sorted(_eos_ids(config)),
        skip_special_tokens=True,
    )


def generate_with_vllm(
    model: VllmModel,
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
    """``generate.generate_answers`` on vLLM: the same arguments, the same results."""
    config = prepared_config(model, tokenizer, params)
    encoded = []
    for prompt in prompts:
        text = render.render_prompt(template, prompt.messages, tokenizer)
        encoded.append((prompt, text, render.tokenize(tokenizer, text)))
    results: list[Generated] = []
    chunk = max(batch_size, CHUNK)
    for start in range(0, len(encoded), chunk):
        if should_stop is not None and should_stop():
            break
        part = encoded[start : start + chunk]
        outputs = model.llm.generate(
            [{"prompt_token_ids": list(ids)} for _, _, ids in part],
            sampling_params=[
                sampling_params(config, template, prompt_seed(seed, p.key)) for p, _, _ in part
            ],
            lora_request=model.lora,
            use_tqdm=False,
        )
        done = [
            _generated(prompt, text, ids, output.outputs[0], template)
            for (prompt, text, ids), output in zip(part, outputs, strict=True)
        ]
        results.extend(done)
        if on_batch is not None:
            on_batch(done)
    return results


def _generated(prompt: Prompt, text: str, ids: Sequence[int], out: Any, template) -> Generated:
    reply, cut = render.extract_reply(template, out.text)
    if out.finish_reason == "length":
        reason = LENGTH
    elif cut or isinstance(out.stop_reason, str):
        reason = STOP_STRING
    else:
        reason = EOS
    tokens = tuple(out.token_ids)
    return Generated(prompt.key, reply, len(tokens), tokens, text, len(ids), reason)
