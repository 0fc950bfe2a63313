"""Whether a judge can read what a run will ask it, checked when the run is created.

The longest rendered judge prompts (in the judge's own chat template, with the judge prompt's
system prompt) plus the verdict's ``max_new_tokens`` must fit the judge's context: past it a
model reads a cut prompt or fails mid-run, and every verdict would be worthless. The tokenizer
is loaded in the web process only through generation.web_tokenizer (never a repository's own
code); a judge whose context is not known here (a served judge, a hub id not on this machine)
is not checked, and the worker checks again before it generates.
"""

from __future__ import annotations

import dataclasses

from evalsite.errors import ServiceError
from generation.engine import render
from generation.models import LanguageModel
from generation.registry import model_context
from generation.templates import as_template

from .plan import Item, PromptPlan

DOES_NOT_FIT = (
    "the judge prompt does not fit judge {judge!r} by {over} tokens: the longest ({prompt}, "
    "{item}) is {tokens} tokens and max_new_tokens {budget} on top needs {needed} of its "
    "{context}-token context; choose a shorter judge prompt or fewer max_new_tokens"
)
# Prompts tokenized per prompt version: the longest by characters (tokens follow characters
# closely enough that the longest in tokens is among them).
LONGEST = 3


def judge_context(judge: LanguageModel) -> int | None:
    """The judge's context length when this machine knows it (None: not checked)."""
    weights = judge.base_model if judge.adapter_path and judge.base_model else judge
    return model_context(weights.name_or_path) if weights.name_or_path else None


def judge_fit_check(
    *, judge: LanguageModel, template_row, plan: PromptPlan, items: list[Item], params: dict
) -> None:
    """ServiceError in one line saying by how much the longest prompt is over, if it is."""
    context = judge_context(judge)
    if context is None or not items:
        return
    from generation.engine.generate import DEFAULT_MAX_NEW_TOKENS
    from generation.web_tokenizer import web_tokenizer

    try:
        tokenizer = web_tokenizer(judge)
    except (ServiceError, OSError, ValueError):
        return  # not loadable here (remote code, not stored): the worker checks it
    budget = int(params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    chat = as_template(template_row)
    by_prompt = {p.pk: p for p in plan.prompts()}
    worst = None
    for prompt_id, prompt in by_prompt.items():
        template = chat
        if prompt.system_prompt:
            template = dataclasses.replace(chat, system_prompt=prompt.system_prompt)
        asked = sorted((i for i in items if i.prompt_id == prompt_id), key=lambda i: -len(i.text))
        for item in asked[:LONGEST]:
            messages = render.conversation([item.text], [])
            tokens = len(render.encode_prompt(template, messages, tokenizer))
            if worst is None or tokens > worst[0]:
                worst = (tokens, prompt, item)
    if worst is None:
        return
    tokens, prompt, item = worst
    needed = tokens + budget
    if needed > context:
        raise ServiceError(
            DOES_NOT_FIT.format(
                judge=judge.name,
                over=needed - context,
                prompt=prompt,
                item=_named(item),
                tokens=tokens,
                budget=budget,
                needed=needed,
                context=context,
            )
        )


def _named(item: Item) -> str:
    if item.comparison_id is not None:
        return f"comparison {item.comparison_id}"
    return f"answer {item.answer_id}"
