"""Prompt formats: how a question becomes a model's input, and how its output becomes an answer.

Plain module, no Django. The same functions render training examples (fine-tuning) and
generation prompts, so a tuned model is generated with exactly the format it was trained on.
"""

from __future__ import annotations

from typing import Any

LINE_SFT = "line_sft"
RINNA = "rinna"
CHAT_TEMPLATE = "chat_template"
PLAIN = "plain"
FORMATS = (LINE_SFT, RINNA, CHAT_TEMPLATE, PLAIN)

USER_TAG = "ユーザー: "
SYSTEM_TAG = "システム: "
RINNA_NL = "<NL>"
# A model that starts a new user turn has finished its own answer.
NEXT_TURN_MARKERS = ("ユーザー:", "ユーザー：")

UNKNOWN_FORMAT = "unknown prompt format {fmt!r}; expected one of: " + ", ".join(FORMATS)
NO_CHAT_TEMPLATE = "prompt format chat_template needs a tokenizer that has a chat template"


def join_instruction(instruction: str, input_text: str = "") -> str:
    """An instruction-data row as one user message: ``{instruction}\\n\\n{input}``."""
    instruction = instruction.strip()
    input_text = (input_text or "").strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def format_prompt(fmt: str, question: str, tokenizer: Any = None) -> str:
    """The text given to the model for one question (the answer follows it directly)."""
    if fmt == LINE_SFT:
        return f"{USER_TAG}{question}\n{SYSTEM_TAG}"
    if fmt == RINNA:
        return f"{USER_TAG}{question.replace(chr(10), RINNA_NL)}{RINNA_NL}{SYSTEM_TAG}"
    if fmt == CHAT_TEMPLATE:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(NO_CHAT_TEMPLATE)
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    if fmt == PLAIN:
        return question
    raise ValueError(UNKNOWN_FORMAT.format(fmt=fmt))


def format_answer(fmt: str, answer: str) -> str:
    """The target text for training: the answer as this format writes it (no end token)."""
    if fmt == RINNA:
        return answer.replace("\n", RINNA_NL)
    if fmt in FORMATS:
        return answer
    raise ValueError(UNKNOWN_FORMAT.format(fmt=fmt))


def extract_reply(fmt: str, generated: str) -> str:
    """The model's reply only, from the decoded continuation (special tokens already dropped).

    Cuts at the next user turn if the model starts one, turns rinna's ``<NL>`` back into
    newlines, and strips surrounding whitespace.
    """
    if fmt not in FORMATS:
        raise ValueError(UNKNOWN_FORMAT.format(fmt=fmt))
    text = generated
    if fmt == RINNA:
        text = text.replace(RINNA_NL, "\n")
    cut = len(text)
    for marker in NEXT_TURN_MARKERS:
        index = text.find(marker)
        if index != -1:
            cut = min(cut, index)
    return text[:cut].strip()
