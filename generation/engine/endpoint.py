"""Answers from a served model: any OpenAI-compatible chat-completions endpoint. No Django.

The client is the ``openai`` package, which every such server (vLLM, SGLang, TGI, llama.cpp,
Ollama, ``transformers serve``, hosted APIs) is written against. It is maintained, and it already
does what is easy to get wrong by hand: retries with exponential backoff and jitter on connection
errors, timeouts, 408/409/429 and 5xx, honouring ``Retry-After`` (and ``retry-after-ms``), typed
responses with token usage, and how many retries each call took. This module adds the rest:
bounded concurrency (a thread pool of ``concurrency`` threads), a requests-per-minute limit shared
by those threads, multi-turn conversations (each turn asked with the model's own earlier replies,
so the turns of one conversation go one after another), and the mapping of what the server says
onto a stored answer's provenance.

What is sent where is ``outbound``'s: the key is the value of the environment variable whose
NAME the model stores (never returned, stored or logged), or ``Bearer none`` when it names none,
never anything the openai package would read from the worker's environment by itself; the host
must be allowed (ENDPOINT_ALLOWED_HOSTS); redirects are not followed; a failure says only the
status and the server's own short message.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import outbound, render
from .generate import DEFAULT_MAX_NEW_TOKENS, EOS, LENGTH, OTHER, STOP_STRING
from .outbound import NO_API_KEY  # noqa: F401 - the message callers and tests know it by

UNSUPPORTED_PARAMS = (
    "a served model cannot take generation parameter(s) {names} "
    "(chat completions have max_new_tokens, do_sample, temperature, top_p, and as vLLM-style "
    "extensions top_k, min_p, min_new_tokens, repetition_penalty)"
)
FAILED = "endpoint {url} (model {model}) failed: {error}"
# The chat-completions API takes at most four stop sequences; the rest are cut client-side.
MAX_STOP = 4
# Parameters that go in the request body as extensions (vLLM's names), only when set.
EXTENSIONS = {
    "top_k": "top_k",
    "min_p": "min_p",
    "min_new_tokens": "min_tokens",
    "repetition_penalty": "repetition_penalty",
}
UNSUPPORTED = ("typical_p", "no_repeat_ngram_size")
# How often the collecting thread asks whether to stop while no reply arrives (seconds).
POLL = 0.5


@dataclass(frozen=True)
class Endpoint:
    url: str
    model: str
    api_key_env: str = ""
    concurrency: int = 4
    requests_per_minute: int | None = None
    max_retries: int = 6
    timeout: float = 600.0
    # Where a served model may point (ENDPOINT_ALLOWED_HOSTS): checked before every request.
    allowed_hosts: tuple[str, ...] = outbound.DEFAULT_ALLOWED_HOSTS


@dataclass(frozen=True)
class Conversation:
    """A question's user turns and the replies already stored; asking starts at the next turn."""

    key: Any
    user_turns: tuple[str, ...]
    replies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    key: Any
    turn: int
    text: str
    messages: tuple[dict, ...]  # the request's messages
    model: str  # the model id the server reported
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str
    requests: int  # HTTP requests this answer took, retries included
    decoding: dict = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.stop_reason == LENGTH


def request_options(params: dict | None, seed: int, stop_strings: Iterable[str] = ()) -> dict:
    """The chat-completions arguments for a run's generation parameters (ValueError for those a
    served model cannot take). Greedy unless ``do_sample``: temperature 0."""
    params = dict(params or {})
    unsupported = sorted(name for name in UNSUPPORTED if params.get(name) is not None)
    if unsupported:
        raise ValueError(UNSUPPORTED_PARAMS.format(names=", ".join(unsupported)))
    options: dict[str, Any] = {
        "max_tokens": int(params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
        "seed": seed,
    }
    if params.get("do_sample"):
        options["temperature"] = float(params.get("temperature", 1.0))
        if params.get("top_p") is not None:
            options["top_p"] = float(params["top_p"])
        extra = {
            wire: params[name] for name, wire in EXTENSIONS.items() if params.get(name) is not None
        }
    else:
        options["temperature"] = 0.0
        extra = {
            wire: params[name]
            for name, wire in EXTENSIONS.items()
            if name in ("min_new_tokens", "repetition_penalty") and params.get(name) is not None
        }
    stops = [s for s in stop_strings if s][:MAX_STOP]
    if stops:
        options["stop"] = stops
    if extra:
        options["extra_body"] = extra
    return options


def decoding_of(options: dict) -> dict:
    """What an answer records of how it was asked for: the request's parameters and seed."""
    recorded = {k: v for k, v in options.items() if k != "extra_body"}
    recorded.update(options.get("extra_body") or {})
    return recorded


class RateLimit:
    """At most ``per_minute`` requests a minute, evenly spaced, across threads (None: no limit).

    It spaces each answer's request; a retry of it waits as the client's backoff (or the
    server's Retry-After) says instead, which a rate-limited server asks for anyway.
    """

    def __init__(self, per_minute: int | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        if slot > now:
            stop.wait(slot - now)


def client_for(endpoint: Endpoint) -> Any:
    """An ``openai.OpenAI`` client for the endpoint: its key from the variable the model names
    (``Bearer none`` without one), its host checked now and before every request, no redirects.
    ValueError (HostNotAllowed, or the key's variable unset) when it may not be asked."""
    from openai import OpenAI

    key = outbound.api_key(endpoint.api_key_env)
    policy = outbound.HostPolicy.of(endpoint.allowed_hosts)
    policy.check(endpoint.url)
    return OpenAI(
        base_url=endpoint.url,
        api_key=key,
        # Whatever else the client reads from the environment (organisation, project, custom
        # headers) the transport drops; an explicit Authorization keeps OPENAI_CUSTOM_HEADERS'.
        default_headers={"Authorization": f"Bearer {key}"},
        max_retries=endpoint.max_retries,
        timeout=endpoint.timeout,
        http_client=outbound.http_client(key=key, policy=policy, timeout=endpoint.timeout),
    )


def chat(client: Any, endpoint: Endpoint, messages: list[dict], options: dict) -> tuple[Any, int]:
    """One chat completion and the HTTP requests it took (retries included); a failure is a
    RuntimeError that says only the status and the server's short message (``FAILED``)."""
    from openai import APIConnectionError, APIError, APIStatusError, APITimeoutError

    try:
        raw = client.chat.completions.with_raw_response.create(
            model=endpoint.model, messages=messages, **options
        )
        return raw.parse(), raw.retries_taken + 1
    except APIError as error:
        refused = error.__cause__
        if isinstance(refused, outbound.HostNotAllowed):  # the transport's check, per request
            summary = str(refused)
        elif isinstance(error, APIStatusError):
            summary = outbound.failure_summary(error.status_code, error.body)
        elif isinstance(error, APITimeoutError | APIConnectionError):
            summary = outbound.failure_summary(None, kind=type(error).__name__)
        else:
            summary = outbound.short_message(getattr(error, "message", "")) or "invalid reply"
        raise RuntimeError(
            FAILED.format(url=_shown(endpoint.url), model=endpoint.model, error=summary)
        ) from error


def _shown(url: str) -> str:
    # The URL without its query or user part: what a failure may show staff.
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def ask_one(
    client: Any,
    endpoint: Endpoint,
    template: render.Template,
    options: dict,
    *,
    key: Any,
    turn: int,
    messages: list[dict],
) -> Reply:
    """One chat completion: the reply alone (``render.extract_reply``) and its provenance."""
    completion, requests = chat(client, endpoint, messages, options)
    choice = completion.choices[0]
    text, cut = render.extract_reply(template, choice.message.content or "")
    usage = completion.usage
    return Reply(
        key=key,
        turn=turn,
        text=text,
        messages=tuple(messages),
        model=completion.model or endpoint.model,
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        stop_reason=_stop_reason(choice, cut),
        requests=requests,
        decoding=decoding_of(options),
    )


def _stop_reason(choice: Any, cut: bool) -> str:
    if choice.finish_reason == "length":
        return LENGTH
    if choice.finish_reason == "stop":
        # vLLM names the stop string it matched in ``stop_reason`` (None for end of sequence).
        matched = getattr(choice, "stop_reason", None)
        return STOP_STRING if cut or isinstance(matched, str) else EOS
    return OTHER


def ask(
    endpoint: Endpoint,
    template: render.Template,
    conversations: Iterable[Conversation],
    *,
    params: dict | None = None,
    seed: int = 0,
    on_reply: Callable[[Reply], None],
    should_stop: Callable[[], bool] | None = None,
    client: Any = None,
) -> None:
    """Ask for every missing turn of ``conversations``, ``endpoint.concurrency`` at a time.

    ``on_reply`` is called in the calling thread with each reply as it arrives (commit it
    there); ``should_stop`` is asked after each reply and every ``POLL`` seconds, and when it
    returns true no new request is sent (those in flight are still collected). The first
    failure (after the client's retries) stops the rest and is raised.
    """
    options = request_options(params, seed, template.stop_strings)
    client = client or client_for(endpoint)
    limit = RateLimit(endpoint.requests_per_minute)
    stop = threading.Event()
    arrived: queue.Queue[Reply] = queue.Queue()
    # A request is sent only while fewer than ``concurrency`` replies wait to be read and checked
    # against ``should_stop``: a stop is then seen at most that many requests late, however slow
    # the calling thread is to store what arrived.
    unread = threading.Semaphore(max(1, endpoint.concurrency))

    def answer(conv: Conversation) -> None:
        replies = list(conv.replies)
        for turn in range(len(replies) + 1, len(conv.user_turns) + 1):
            while not unread.acquire(timeout=POLL):
                if stop.is_set():
                    return
            limit.wait(stop)
            if stop.is_set():
                return
            messages = render.chat_messages(
                template, render.conversation(conv.user_turns[:turn], replies)
            )
            try:
                reply = ask_one(
                    client, endpoint, template, options, key=conv.key, turn=turn, messages=messages
                )
            except BaseException:
                stop.set()  # no thread starts another request
                raise
            arrived.put(reply)
            replies.append(reply.text)

    def deliver(block: bool) -> int:
        read = 0
        while True:
            try:
                reply = arrived.get(timeout=POLL) if block else arrived.get_nowait()
            except queue.Empty:
                return read
            on_reply(reply)
            read += 1
            block = False

    with ThreadPoolExecutor(
        max_workers=max(1, endpoint.concurrency), thread_name_prefix="endpoint"
    ) as pool:
        pending = {pool.submit(answer, conv) for conv in conversations}
        try:
            while pending:
                read = deliver(block=True)
                finished, pending = wait(pending, timeout=0, return_when=FIRST_EXCEPTION)
                for future in finished:
                    if not future.cancelled():
                        future.result()  # the first failure, raised here
                if not stop.is_set() and should_stop is not None and should_stop():
                    stop.set()
                    for future in pending:
                        future.cancel()
                for _ in range(read):
                    unread.release()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            deliver(block=False)
            raise
    deliver(block=False)
