"""Training examples as the model sees them: rendered with the model's own prompt format,
tokenized exactly as generation will tokenize the prompt, with the loss on the answer only.
Plain module, no Django (``train.py`` trains on what this makes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from generation import prompts as formats

# Labels with this value are left out of the loss (PyTorch's cross-entropy ignore_index).
IGNORE_INDEX = -100
NO_EOS = "the tokenizer has no end-of-sequence token to end answers with"


@dataclass(frozen=True)
class Example:
    instruction: str
    output: str
    input: str = ""


def render_example(tokenizer: Any, fmt: str, example: Example, *, max_length: int) -> dict | None:
    """Token ids and labels of one training example; None if no answer token fits.

    The text is ``format_prompt(fmt, join_instruction(instruction, input))`` followed by
    ``format_answer(fmt, output)`` and the tokenizer's end token: the prompt the generation
    engine gives the model, then what the model should write, then the end it should stop at.

    THE ANSWER-ONLY LOSS MASK IS MADE HERE: every prompt token gets label ``IGNORE_INDEX``;
    answer tokens and the end token keep their ids. (Padding is masked in ``AnswerOnlyCollator``.)

    The prompt is encoded exactly as ``generate.encode_prompt`` encodes it at generation time and
    the answer on its own, so the model learns to continue the very tokens it will be given.
    Where the two pieces do not decode back to prompt + answer (a sentencepiece tokenizer that
    puts a word-start mark before the answer), the whole text is encoded at once instead and
    the answer starts at the first token that differs from the prompt's encoding; a token
    spanning the boundary then counts as answer (the model has to learn to write it).
    """
    from .generate import encode_prompt

    question = formats.join_instruction(example.instruction, example.input)
    prompt = formats.format_prompt(fmt, question, tokenizer)
    answer = formats.format_answer(fmt, example.output.strip())
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(NO_EOS)
    prompt_ids = encode_prompt(tokenizer, prompt, fmt)
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if tokenizer.decode(prompt_ids + answer_ids) != tokenizer.decode(prompt_ids) + answer:
        full_ids = encode_prompt(tokenizer, prompt + answer, fmt)
        start = 0
        while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
            start += 1
        prompt_ids, answer_ids = full_ids[:start], full_ids[start:]
    input_ids = [*prompt_ids, *answer_ids, eos][:max_length]
    labels = [IGNORE_INDEX] * len(prompt_ids) + [*answer_ids, eos]
    labels = labels[:max_length]
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
