"""The one renderer: how a conversation becomes a model's input, and its output an answer.

Plain module, no Django. Generation, fine-tuning and the judge all render through here, so the
same conversation gives the same tokens in all three.

The rendered text is the model's WHOLE input and is tokenized with ``add_special_tokens=False``
(``tokenize``): a template that wants a BOS token writes it (the Jinja kind gets ``bos_token``).

Three kinds of template:
- ``turns``: text around each turn. The system block, then one exchange per user turn (the user
  turn, then the reply) joined by ``turn_separator``; a prompt ends with the text of
  ``assistant_template`` before ``{content}``, where the reply starts. Inside turns, newlines are
  written as ``newline_token`` when it is set (rinna's ``<NL>``).
- ``chat_template``: the tokenizer's own chat template (``tokenizer_config.json``).
- ``jinja``: Jinja2 source rendered in the bounded sandbox (sandbox.py) over ``messages``
  (role, content; a system message first when there is a system prompt), ``system_prompt``,
  ``add_generation_prompt``, ``bos_token`` and ``eos_token``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError

from .sandbox import BoundedSandbox, BoundedTemplate, compile_template

TURNS = "turns"
CHAT_TEMPLATE = "chat_template"
JINJA = "jinja"
KINDS = (TURNS, CHAT_TEMPLATE, JINJA)

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
CONTENT = "{content}"
SYSTEM_SLOT = "{system}"
# Placeholders each text field of a ``turns`` template may hold (anything else is a typo).
PLACEHOLDERS = {
    "system_template": (SYSTEM_SLOT,),
    "user_template": (CONTENT,),
    "assistant_template": (CONTENT,),
    "turn_separator": (),
}
PLACEHOLDER_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")

UNKNOWN_KIND = "unknown template kind {kind!r}; expected one of: " + ", ".join(KINDS)
NO_CHAT_TEMPLATE = "template kind chat_template needs a tokenizer that has a chat template"
NO_TURNS = "a conversation needs at least one user turn"
BAD_ORDER = (
    "messages must alternate user and assistant, starting with a user turn "
    "(after an optional system message); message {index} is {role!r}"
)
PROMPT_ENDS_WITH_REPLY = "a prompt's messages must end with a user turn"
EXAMPLE_ENDS_WITH_USER = "a training example's messages must end with an assistant reply"
BAD_REPLIES = "{turns} user turn(s) take {turns} or {less} replies, not {replies}"
NOT_A_PREFIX = (
    "template {name} v{version}: the conversation with its last reply does not start with the "
    "prompt without it, so the reply cannot be told apart for training"
)
CHAT_TEMPLATE_FAILED = "template {name} v{version}: the tokenizer's chat template failed: {error}"
JINJA_FAILED = "template {name} v{version}: the Jinja source failed: {error}"


@dataclass(frozen=True)
class Template:
    """A prompt template (mirrors a ``PromptTemplate`` row)."""

    name: str
    version: int
    kind: str
    system_prompt: str = ""
    system_template: str = SYSTEM_SLOT
    user_template: str = CONTENT
    assistant_template: str = CONTENT
    turn_separator: str = ""
    newline_token: str = ""
    stop_strings: tuple[str, ...] = ()
    end_with_eos: bool = True
    jinja_source: str = ""


def template_from(name: str, version: int, fields: Mapping[str, Any]) -> Template:
    """A Template from a mapping of its fields (a preset, a row's values); others are ignored."""
    known = {f.name for f in dataclasses.fields(Template)} - {"name", "version"}
    values = {key: value for key, value in fields.items() if key in known}
    values["stop_strings"] = tuple(values.get("stop_strings") or ())
    return Template(name=name, version=version, **values)


# --- conversations -----------------------------------------------------------------------------


def conversation(user_turns: Sequence[str], replies: Sequence[str]) -> list[dict]:
    """User and assistant messages, alternating: ``user_turns[0], replies[0], user_turns[1]...``

    ``replies`` has one reply per user turn (a whole conversation, for training) or one fewer
    (a prompt: the model answers the last user turn).
    """
    if not user_turns:
        raise ValueError(NO_TURNS)
    if len(replies) not in (len(user_turns), len(user_turns) - 1):
        raise ValueError(
            BAD_REPLIES.format(
                turns=len(user_turns), less=len(user_turns) - 1, replies=len(replies)
            )
        )
    messages = []
    for index, turn in enumerate(user_turns):
        messages.append({"role": USER, "content": turn})
        if index < len(replies):
            messages.append({"role": ASSISTANT, "content": replies[index]})
    return messages


def _split_system(template: Template, messages: Sequence[dict]) -> tuple[str, list[dict]]:
    """(system prompt, the user/assistant messages), checked to alternate from a user turn.

    A system message at the start of ``messages`` replaces the template's system prompt.
    """
    rest = [{"role": m["role"], "content": m["content"]} for m in messages]
    system = template.system_prompt
    if rest and rest[0]["role"] == SYSTEM:
        system = rest.pop(0)["content"]
    if not rest:
        raise ValueError(NO_TURNS)
    for index, message in enumerate(rest):
        expected = USER if index % 2 == 0 else ASSISTANT
        if message["role"] != expected:
            raise ValueError(BAD_ORDER.format(index=index, role=message["role"]))
    return system, rest


def _with_system(system: str, messages: list[dict]) -> list[dict]:
    return ([{"role": SYSTEM, "content": system}] if system else []) + messages


# --- rendering ---------------------------------------------------------------------------------


def render_prompt(template: Template, messages: Sequence[dict], tokenizer: Any = None) -> str:
    """The model's whole input for answering the last user turn; the reply follows it directly.

    ``tokenizer`` is needed by the chat_template kind, and gives the Jinja kind its
    ``bos_token`` / ``eos_token`` (empty without one).
    """
    system, rest = _split_system(template, messages)
    if rest[-1]["role"] != USER:
        raise ValueError(PROMPT_ENDS_WITH_REPLY)
    return _render(template, system, rest, tokenizer, add_generation_prompt=True)


def render_example(template: Template, messages: Sequence[dict], tokenizer: Any) -> tuple[str, str]:
    """(prompt text, target text) for training on the LAST assistant message.

    The prompt is exactly ``render_prompt`` of the messages before that reply, so a tuned model
    is trained on the very text generation will give it. The target is the reply as the template
    writes it, ending with the tokenizer's end-of-sequence text when ``end_with_eos`` (once: a
    template that writes it itself, as Llama-2's does, is not given a second one).
    """
    system, rest = _split_system(template, messages)
    if rest[-1]["role"] != ASSISTANT:
        raise ValueError(EXAMPLE_ENDS_WITH_USER)
    prompt = _render(template, system, rest[:-1], tokenizer, add_generation_prompt=True)
    if template.kind == TURNS:
        target = _turns_reply(template, rest[-1]["content"])
    else:
        full = _render(template, system, rest, tokenizer, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError(NOT_A_PREFIX.format(name=template.name, version=template.version))
        target = full[len(prompt) :]
    eos = _special(tokenizer, "eos_token")
    if template.end_with_eos and eos and not target.endswith(eos):
        target += eos
    return prompt, target


def _render(
    template: Template,
    system: str,
    messages: list[dict],
    tokenizer: Any,
    *,
    add_generation_prompt: bool,
) -> str:
    if template.kind == TURNS:
        return _render_turns(template, system, messages, add_generation_prompt)
    if template.kind == CHAT_TEMPLATE:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(NO_CHAT_TEMPLATE)
        try:
            return tokenizer.apply_chat_template(
                _with_system(system, messages),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except TemplateError as error:  # e.g. a template that refuses a system message
            raise ValueError(
                CHAT_TEMPLATE_FAILED.format(
                    name=template.name, version=template.version, error=error
                )
            ) from error
    if template.kind == JINJA:
        try:
            return _compiled(template.jinja_source).render(
                messages=_with_system(system, messages),
                system_prompt=system,
                add_generation_prompt=add_generation_prompt,
                bos_token=_special(tokenizer, "bos_token"),
                eos_token=_special(tokenizer, "eos_token"),
            )
        except TemplateError as error:  # sandbox.TemplateRenderError: its line and what went wrong
            raise ValueError(
                JINJA_FAILED.format(name=template.name, version=template.version, error=error)
            ) from None
    raise ValueError(UNKNOWN_KIND.format(kind=template.kind))


def _encode_newlines(template: Template, text: str) -> str:
    return text.replace("\n", template.newline_token) if template.newline_token else text


def _turns_reply(template: Template, content: str) -> str:
    """A reply as training teaches it: its text, then whatever the assistant template writes
    after ``{content}`` (an end marker, say), exactly as an earlier reply is rendered."""
    closing = (
        template.assistant_template.split(CONTENT, 1)[1]
        if CONTENT in template.assistant_template
        else ""
    )
    return _encode_newlines(template, content) + closing


def _render_turns(
    template: Template, system: str, messages: list[dict], add_generation_prompt: bool
) -> str:
    head = ""
    if system:
        head = template.system_template.replace(SYSTEM_SLOT, _encode_newlines(template, system))
    reply_opening = template.assistant_template.split(CONTENT, 1)[0]
    exchanges = []
    for index in range(0, len(messages), 2):
        text = template.user_template.replace(
            CONTENT, _encode_newlines(template, messages[index]["content"])
        )
        if index + 1 < len(messages):
            reply = _encode_newlines(template, messages[index + 1]["content"])
            text += template.assistant_template.replace(CONTENT, reply)
        elif add_generation_prompt:
            text += reply_opening
        exchanges.append(text)
    return head + template.turn_separator.join(exchanges)


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> BoundedTemplate:
    return compile_template(_environment(), source)


def sandboxed(source: str) -> BoundedTemplate:
    """Jinja2 source compiled in the renderer's bounded sandbox (StrictUndefined); the judge
    and rewrite prompts (judging/engine/verdicts.py, evolution/engine/operations.py) render
    through it too. Compiling or rendering raises ``sandbox.TemplateRenderError`` (a
    ``jinja2.TemplateError`` naming the template line) for whatever goes wrong, a limit
    (time, size, ``range``, recursion) included."""
    return _compiled(source)


@functools.lru_cache(maxsize=1)
def _environment() -> BoundedSandbox:
    # The sandbox refuses attribute access to internals (``__class__``, ``__globals__`` ...) and
    # changing the objects it is given, and bounds every render (sandbox.Limits);
    # StrictUndefined turns a misspelt variable into an error.
    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined, autoescape=False
    )
    env.globals["raise_exception"] = _raise
    return env


def _raise(message: str):
    raise TemplateError(message)


def compile_jinja(source: str) -> None:
    """Compile ``source`` in the sandbox; raises jinja2.TemplateError (syntax) if it cannot."""
    _compiled(source)


def _special(tokenizer: Any, attribute: str) -> str:
    value = getattr(tokenizer, attribute, None) if tokenizer is not None else None
    return str(value) if value else ""


# --- tokens ------------------------------------------------------------------------------------


def tokenize(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text, adding nothing (the text already holds any special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(template: Template, messages: Sequence[dict], tokenizer: Any) -> list[int]:
    """THE one path to a prompt's token ids: ``render_prompt`` then ``tokenize``."""
    return tokenize(tokenizer, render_prompt(template, messages, tokenizer))


# --- output ------------------------------------------------------------------------------------


def extract_reply(template: Template, generated_text: str) -> tuple[str, bool]:
    """(the reply alone, whether a stop string cut it) from the decoded continuation.

    The text is cut at the first stop string (as the model wrote it, so before newline tokens
    are decoded), newline tokens become newlines, and surrounding whitespace is stripped.
    """
    text = generated_text
    cut = len(text)
    for stop in template.stop_strings:
        index = text.find(stop) if stop else -1
        if index != -1:
            cut = min(cut, index)
    stopped = cut < len(text)
    text = text[:cut]
    if template.newline_token:
        text = text.replace(template.newline_token, "\n")
    return text.strip(), stopped


def chat_messages(template: Template, messages: Sequence[dict]) -> list[dict]:
    """OpenAI chat-format messages for an endpoint model: the system prompt (if any), then the
    conversation. The server applies its own chat template; newlines stay newlines."""
    system, rest = _split_system(template, messages)
    return _with_system(system, rest)


# --- checks ------------------------------------------------------------------------------------


def problems(template: Template) -> dict[str, str]:
    """What is wrong with a template, by field name (empty when it can be used).

    Used by the Django side to refuse a template before it is saved. The Jinja kind is compiled
    in the sandbox and rendered over a short two-turn conversation, so a template that reaches
    for something the sandbox refuses fails here rather than in a run.
    """
    found: dict[str, str] = {}
    if template.kind not in KINDS:
        return {"kind": UNKNOWN_KIND.format(kind=template.kind)}
    if template.kind == TURNS:
        for field, allowed in PLACEHOLDERS.items():
            value = getattr(template, field)
            unknown = sorted(set(PLACEHOLDER_RE.findall(value)) - set(allowed))
            if unknown:
                found[field] = f"unknown placeholder(s) {', '.join(unknown)}; " + (
                    f"only {', '.join(allowed)} may be used" if allowed else "none may be used"
                )
        for field in ("user_template", "assistant_template"):
            count = getattr(template, field).count(CONTENT)
            if field not in found and count != 1:
                found[field] = f"must contain {CONTENT} exactly once (found {count})"
        writes_system = SYSTEM_SLOT in template.system_template
        if template.system_prompt and "system_template" not in found and not writes_system:
            found["system_template"] = f"must contain {SYSTEM_SLOT} to write the system prompt"
    if template.kind == JINJA:
        if not template.jinja_source.strip():
            found["jinja_source"] = "a jinja template needs its source"
        else:
            try:
                compile_jinja(template.jinja_source)
                sample = conversation(["質問1", "質問2"], ["答え1"])
                _render(template, template.system_prompt, sample, None, add_generation_prompt=True)
            except (TemplateError, ValueError) as error:
                found["jinja_source"] = str(error)
    elif template.jinja_source.strip():
        found["jinja_source"] = "only a template of kind jinja has Jinja source"
    bad_stops = [s for s in template.stop_strings if not isinstance(s, str) or not s]
    if bad_stops:
        found["stop_strings"] = "stop strings must be non-empty strings"
    return found
