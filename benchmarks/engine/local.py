"""A model with weights as an lm-eval model that prompts the way generation does.

lm-eval's chat path builds each example as a conversation (a system instruction, the few-shot
examples as earlier user/assistant turns, the question) and asks the model to render it. Here
that rendering is the app's one renderer (generation/engine/render.py) with the model's own
template, so a benchmark prompt is exactly what generation, fine-tuning and the judge give the
same model; and the rendered text is tokenized as generation tokenizes it: nothing added
(a template that wants a BOS writes it). The conversation behind each rendered prompt is kept
(``conversations``) so the run can store it beside the text.

Imported only where lm-eval is installed (``harness.templated_model``).
"""

from __future__ import annotations

from typing import Any

from lm_eval.models.huggingface import HFLM

from generation.engine import render


def template_label(template: render.Template) -> str:
    return f"{template.name} v{template.version}"


def render_chat(template: render.Template, chat: list[dict], tokenizer: Any) -> str:
    """lm-eval's chat history rendered by ``template``. A history that ends with an assistant
    message (lm-eval's ``gen_prefix``) is the prompt for the turn before it, then that text:
    the reply starts there."""
    messages = [{"role": m["role"], "content": m["content"]} for m in chat]
    prefill = ""
    if messages and messages[-1]["role"] == render.ASSISTANT:
        prefill = messages.pop()["content"]
    return render.render_prompt(template, messages, tokenizer) + prefill


class TemplatedHFLM(HFLM):
    """HFLM rendering through the model's prompt template, tokenizing without added tokens."""

    def __init__(self, *, template: render.Template, **kwargs):
        # add_bos_token False: HFLM then encodes every text with add_special_tokens=False.
        super().__init__(add_bos_token=False, **kwargs)
        self.template = template
        self.conversations: dict[str, list[dict]] = {}

    @property
    def tokenizer_name(self) -> str:
        # lm-eval keys its request cache on this; the template is part of what was asked.
        return f"{super().tokenizer_name}__{template_label(self.template)}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        # What lm-eval records as "the chat template" of the run.
        return self.template.jinja_source or template_label(self.template)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True):
        text = render_chat(self.template, chat_history, self.tokenizer)
        self.conversations[text] = render.chat_messages(self.template, chat_history)
        return text
