"""Training examples as the model sees them: rendered by the one renderer (``render.py``) with
the model's prompt template, the prompt tokenized exactly as generation tokenizes it, with the
loss on the answer only. Plain module, no Django (``train.py`` trains on what this makes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import render

# Labels with this value are left out of the loss (PyTorch's cross-entropy ignore_index).
IGNORE_INDEX = -100
NO_EOS = "the tokenizer has no end-of-sequence token to end answers with"


@dataclass(frozen=True)
class Example:
    instruction: str
    output: str
    input: str = ""


def join_instruction(instruction: str, input_text: str | None = "") -> str:
    """An instruction-data row as one user message: ``{instruction}\\n\\n{input}``."""
    instruction = instruction.strip()
    input_text = (input_text or "").strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def example_messages(example: Example) -> list[dict]:
    """The conversation an instruction-data row stands for: its question, then its answer."""
    question = join_instruction(example.instruction, example.input)
    return render.conversation([question], [example.output.strip()])


def encode_example(
    tokenizer: Any, template: render.Template, example: Example, *, max_length: int
) -> dict | None:
    """Token ids and labels of one training example; None if no answer token fits.

    The text is ``render.render_example``: the prompt generation gives the model, then the
    reply as the template writes it, then the end token (``end_with_eos``).

    THE ANSWER-ONLY LOSS MASK IS MADE HERE: every prompt token gets label ``IGNORE_INDEX``;
    answer tokens and the end token keep their ids. (Padding is masked in ``AnswerOnlyCollator``.)

    The prompt's ids are ``render.encode_prompt``'s, token for token, so the model learns to
    continue the very tokens it will be given. The answer's ids are those the whole text gets
    after the prompt's; where the tokenizer merges across the boundary (a sentencepiece
    tokenizer that joins the prompt's last space to the answer's first word), the answer is
    encoded on its own instead, so the prompt still stays exactly as generation sends it.
    The end token is appended as its id, never left to the tokenizer to find in the text.
    """
    messages = example_messages(example)
    prompt_text, target = render.render_example(template, messages, tokenizer)
    eos_id = tokenizer.eos_token_id
    eos_text = str(tokenizer.eos_token) if tokenizer.eos_token else ""
    ends_with_eos = bool(eos_text) and target.endswith(eos_text)
    if template.end_with_eos and (eos_id is None or not ends_with_eos):
        raise ValueError(NO_EOS)
    if ends_with_eos:
        target = target[: -len(eos_text)]
    prompt_ids = render.encode_prompt(template, messages[:-1], tokenizer)
    full_ids = render.tokenize(tokenizer, prompt_text + target)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        answer_ids = full_ids[len(prompt_ids) :]
    else:
        answer_ids = render.tokenize(tokenizer, target)
    if ends_with_eos:
        answer_ids.append(eos_id)
    input_ids = [*prompt_ids, *answer_ids][:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


class AnswerOnlyCollator:
    """Right-pads a batch. Padding gets label ``IGNORE_INDEX`` and attention 0.

    Labels are padded on their own, never derived from the input ids: many tokenizers (GPT-NeoX
    among them) pad with the end token, and deriving labels from ``input_ids != pad`` would drop
    the end token the model must learn to write.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(f["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def split_examples(
    examples: Sequence[Example], eval_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, held out): a seeded shuffle, then the first ``eval_fraction`` of it held out.

    A non-zero fraction holds out at least one example when there are two or more.
    """
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_eval = held_out_count(len(order), eval_fraction)
    return order[n_eval:], order[:n_eval]


def held_out_count(n: int, eval_fraction: float) -> int:
    if eval_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * eval_fraction)))
