"""A model's own chat template beside the prompt template it is registered with: plain module,
no Django.

- ``own_chat_template``: the template the model ships (``chat_template.jinja`` in its folder, or
  ``chat_template`` in ``tokenizer_config.json``; transformers loads either onto the tokenizer).
- ``own_template``: that source as a ``jinja`` template of the app's renderer, so it renders in
  the bounded sandbox (sandbox.py) like every other template, never through transformers' own
  Jinja environment.
- ``template_diff``: both rendered on one sample conversation, as a unified diff.
- ``preview``: exactly what generation sends: the rendered text, the token ids
  ``render.encode_prompt`` gives (nothing added), those tokens, and what the tokenizer would
  have added by itself (a BOS, say) that generation does not.
- ``special_token_warnings``: BOS/EOS and other special-token strings a template writes (or
  leaves out) checked against the tokenizer.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import render

CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

SAMPLE_SYSTEM = "あなたは誠実で優秀なアシスタントです。"
SAMPLE = render.conversation(
    ["富士山の高さは？", "では、二番目に高い山は？"], ["3776メートルです。"]
)
OWN_LABEL = "the model's own chat template"

# Strings shaped like special tokens: <s>, </s>, <unk>, <pad>, <bos>, <eos>, <|...|>.
SPECIAL_SHAPE = re.compile(r"<\|[^<>|\s]{1,40}\|>|</?s>|<(?:unk|pad|bos|eos)>")

NOT_SPECIAL = (
    "{template} writes {text!r}, which is not a special token of this tokenizer (its special "
    "tokens: {specials}); it is sent as plain text, {count} token(s)"
)
BOS_MISSING = (
    "the model's own chat template starts with its BOS token {bos!r}; {template} writes none, "
    "so generation sends none"
)
BOS_ADDED_BY_TOKENIZER = (
    "this tokenizer adds {added} to text by itself; generation does not (a template that wants "
    "them writes them), and {template} writes none"
)
NO_EOS = (
    "{template} ends training examples with the end-of-sequence token, but this tokenizer has none"
)
OWN_FAILED = "the model's own chat template cannot be rendered in the sandbox: {error}"


def own_chat_template(tokenizer: Any) -> str:
    """The tokenizer's own chat template source ("" when it has none). A tokenizer with several
    named templates gives its ``default`` one (or the first)."""
    value = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(value, dict):
        value = value.get("default") or next(iter(value.values()), "")
    return value if isinstance(value, str) else ""


def chat_template_file(folder_files: dict[str, str]) -> str:
    """Which file holds a model's own chat template: ``chat_template.jinja`` or
    ``tokenizer_config.json`` ("" when neither). ``folder_files`` maps those names to their local
    paths (missing names left out)."""
    if CHAT_TEMPLATE_FILE in folder_files:
        return CHAT_TEMPLATE_FILE
    path = folder_files.get(TOKENIZER_CONFIG_FILE)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                if json.load(handle).get("chat_template"):
                    return TOKENIZER_CONFIG_FILE
        except (OSError, ValueError, AttributeError):
            return ""
    return ""


def own_template(source: str, *, name: str = "own", version: int = 0) -> render.Template:
    """The model's own chat template as the renderer's ``jinja`` kind (sandboxed). Its system
    prompt is whatever the source itself writes; it ends with the end token it writes."""
    return render.Template(name=name, version=version, kind=render.JINJA, jinja_source=source)


def label(template: render.Template) -> str:
    return f"{template.name} v{template.version}" if template.version else OWN_LABEL


def _rendered(template: render.Template, messages: Sequence[dict], tokenizer: Any) -> str:
    try:
        return render.render_prompt(template, messages, tokenizer)
    except ValueError as error:
        return f"({error})\n"


def sample_messages(system: str = SAMPLE_SYSTEM) -> list[dict]:
    """The sample conversation: a system prompt, a question, its answer, a second question."""
    return [{"role": render.SYSTEM, "content": system}, *SAMPLE] if system else list(SAMPLE)


def template_diff(
    chosen: render.Template,
    own_source: str,
    tokenizer: Any,
    messages: Sequence[dict] | None = None,
) -> str:
    """A unified diff of the prompt ``chosen`` renders and the prompt the model's own chat
    template renders (in the sandbox) for the same conversation; "" when they are the same."""
    messages = list(messages) if messages is not None else sample_messages()
    mine = _rendered(chosen, messages, tokenizer)
    theirs = _rendered(own_template(own_source), messages, tokenizer)
    return "".join(
        difflib.unified_diff(
            mine.splitlines(keepends=True),
            theirs.splitlines(keepends=True),
            fromfile=label(chosen),
            tofile=OWN_LABEL,
        )
    )


@dataclass
class Preview:
    """What generation sends for a conversation: the text and its tokens."""

    prompt: str
    token_ids: list[int]
    tokens: list[str]
    special_tokens: list[str]  # the special tokens among them, in order
    decoded: str  # the ids decoded, special tokens kept: the text the model receives
    tokenizer_would_add: list[str] = field(default_factory=list)


def preview(template: render.Template, messages: Sequence[dict], tokenizer: Any) -> Preview:
    """Render and tokenize as generation does (``render.encode_prompt``: nothing added) and say
    what the tokenizer would have added by itself. ValueError when the template cannot
    render the conversation."""
    text = render.render_prompt(template, messages, tokenizer)
    ids = render.tokenize(tokenizer, text)
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    tokens = list(tokenizer.convert_ids_to_tokens(ids))
    return Preview(
        prompt=text,
        token_ids=ids,
        tokens=tokens,
        special_tokens=[t for t, i in zip(tokens, ids, strict=True) if i in specials],
        decoded=tokenizer.decode(ids, skip_special_tokens=False),
        tokenizer_would_add=_added_by_tokenizer(tokenizer, text, ids),
    )


def _added_by_tokenizer(tokenizer: Any, text: str, ids: list[int]) -> list[str]:
    with_specials = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if with_specials == ids:
        return []
    head = (
        with_specials[: len(with_specials) - len(ids)] if with_specials[-len(ids) :] == ids else []
    )
    tail = with_specials[len(ids) :] if with_specials[: len(ids)] == ids else []
    extra = head or tail or [i for i in with_specials if i not in ids]
    return list(tokenizer.convert_ids_to_tokens(extra))


def special_token_warnings(
    template: render.Template, tokenizer: Any, own_source: str = ""
) -> list[str]:
    """Where ``template``'s special tokens disagree with ``tokenizer``: a special-token string it
    writes that the tokenizer does not have (sent as plain text), a BOS the model's own chat
    template or the tokenizer would put first that the template leaves out, training examples
    ending with an EOS the tokenizer lacks."""
    name = label(template)
    warnings = []
    specials = [str(t) for t in getattr(tokenizer, "all_special_tokens", []) or []]
    written = " ".join(
        [
            template.system_template,
            template.user_template,
            template.assistant_template,
            template.turn_separator,
            template.jinja_source,
            *template.stop_strings,
        ]
    )
    for text in sorted(set(SPECIAL_SHAPE.findall(written))):
        if text not in specials:
            count = len(render.tokenize(tokenizer, text))
            warnings.append(
                NOT_SPECIAL.format(
                    template=name, text=text, specials=", ".join(specials) or "none", count=count
                )
            )
    messages = sample_messages()
    try:
        mine = render.render_prompt(template, messages, tokenizer)
    except ValueError:
        mine = None
    bos = getattr(tokenizer, "bos_token", None)
    if bos and mine is not None and not mine.startswith(str(bos)):
        theirs = ""
        if own_source:
            try:
                theirs = render.render_prompt(own_template(own_source), messages, tokenizer)
            except ValueError as error:
                warnings.append(OWN_FAILED.format(error=error))
        added = _added_by_tokenizer(tokenizer, mine, render.tokenize(tokenizer, mine))
        if theirs.startswith(str(bos)):
            warnings.append(BOS_MISSING.format(bos=str(bos), template=name))
        elif added:
            warnings.append(BOS_ADDED_BY_TOKENIZER.format(added=", ".join(added), template=name))
    if template.end_with_eos and not getattr(tokenizer, "eos_token", None):
        warnings.append(NO_EOS.format(template=name))
    return warnings
