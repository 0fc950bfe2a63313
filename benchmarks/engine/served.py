"""A served model as an lm-eval model: chat completions sent through the app's one client
(generation/engine/endpoint.py), so a benchmark run sends what every other run sends: the key
the model's row names (``Bearer none`` without one), only to an allowed host, no redirects, and a
failure that says only the status and the server's short message.

lm-eval's own local-chat-completions would read ``OPENAI_API_KEY`` from the worker's environment
when given no key, follow redirects, and log whole error bodies; this takes its place. The
messages are the model's template's (``render.chat_messages``: its system prompt unless the run
gives a system instruction), the same conversation a local run of the model renders.
Imported only where lm-eval is installed (``harness.served_model``).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lm_eval.api.model import LM
from lm_eval.models.api_models import JsonChatStr

from generation.engine import render
from generation.engine.endpoint import MAX_STOP, Endpoint, chat, client_for

DEFAULT_MAX_GEN_TOKS = 256


def request_options(gen_kwargs: dict | None, seed: int) -> tuple[dict, list[str]]:
    """Chat-completions arguments for lm-eval's generation kwargs (greedy unless it samples),
    and every stop string (the server gets the first ``MAX_STOP``; the rest are cut here)."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.get("until") or []
    stops = [until] if isinstance(until, str) else [s for s in until if s]
    options: dict[str, Any] = {
        "max_tokens": int(kwargs.get("max_tokens") or kwargs.get("max_gen_toks") or 0)
        or DEFAULT_MAX_GEN_TOKS,
        "temperature": float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0,
        "seed": seed,
    }
    if kwargs.get("do_sample") and kwargs.get("top_p") is not None:
        options["top_p"] = float(kwargs["top_p"])
    if stops:
        options["stop"] = stops[:MAX_STOP]
    return options, stops


def cut_at(text: str, stops: list[str]) -> str:
    """``text`` up to the first stop string (a server honours at most ``MAX_STOP``)."""
    ends = [text.find(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


class ServedChat(LM):
    """Generative only: chat completions return no log-likelihoods (the run refuses such
    scoring before it starts; these methods say so if asked anyway)."""

    def __init__(self, endpoint: Endpoint, template: render.Template, *, seed: int = 1234):
        super().__init__()
        self.endpoint = endpoint
        self.template = template
        self.seed = seed
        self.client = client_for(endpoint)
        self.conversations: dict[str, list[dict]] = {}

    @property
    def tokenizer_name(self) -> str:
        return f"served:{self.endpoint.model}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return ""  # the server applies its own

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt=True):
        # lm-eval keeps the rendered prompt as text; the messages travel as JSON inside it.
        messages = render.chat_messages(self.template, chat_history)
        text = json.dumps(messages, ensure_ascii=False)
        self.conversations[text] = messages
        return JsonChatStr(text)

    def loglikelihood(self, requests):
        raise NotImplementedError("a served model returns no log-likelihoods")

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError("a served model returns no log-likelihoods")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        def one(request) -> str:
            context, gen_kwargs = request.args[0], request.args[1]
            options, stops = request_options(gen_kwargs, self.seed)
            completion, _ = chat(self.client, self.endpoint, _messages(context), options)
            text = cut_at(completion.choices[0].message.content or "", stops)
            self.cache_hook.add_partial("generate_until", request.args, text)
            return text

        pool = ThreadPoolExecutor(
            max_workers=max(1, self.endpoint.concurrency), thread_name_prefix="benchmark"
        )
        try:
            futures = [pool.submit(one, request) for request in requests]
            return [future.result() for future in futures]
        finally:  # the first failure stops the requests not yet sent
            pool.shutdown(wait=True, cancel_futures=True)


def _messages(context: Any) -> list[dict]:
    # The chat history apply_chat_template packed, or a plain prompt as one user turn.
    if isinstance(context, JsonChatStr):
        return json.loads(context.prompt)
    return [{"role": "user", "content": str(context)}]
