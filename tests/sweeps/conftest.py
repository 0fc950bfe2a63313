"""Fixtures of the sweep tests: a four-question prompt set with references, a data set, the
tiny model as the base, and the canned judge (a real OpenAI-compatible HTTP server whose
replies follow a stated rule, so every score a sweep reports can be worked out by hand)."""

from __future__ import annotations

import re

import pytest

from generation.importers import ParsedQuestion
from generation.registry import prompt_set_create

# The shipped judge prompts (autouse), the canned judge and its registration as a served model.
from tests.judging.conftest import (  # noqa: F401
    _judge_prompt_presets,
    canned_judge,
    served_judge,
)

# Four questions written for these tests, each with a short reference answer for grading.
QUESTIONS = (
    ("冬の朝に布団から出やすくする工夫は？", "部屋を先に暖めておく。"),
    ("初めて登山をする人が持つべき物は何ですか。", "雨具と水と地図。"),
    ("おにぎりの具で人気があるものを教えてください。", "鮭や梅干し、昆布。"),
    ("図書館で静かに過ごすための心がけは？", "小声で話し、音の出る物を控える。"),
)

# Fine-tune settings that keep each cell to a few seconds on one CPU core.
TINY_SWEEP = {
    "max_steps": 2,
    "batch_size": 2,
    "gradient_accumulation": 1,
    "max_length": 128,
    "eval_fraction": 0.0,
    "save_steps": 1000,
}


@pytest.fixture
def sweep_questions(db):
    return prompt_set_create(
        name="sweep-questions",
        questions=[
            ParsedQuestion(line=i, text=q, reference=r) for i, (q, r) in enumerate(QUESTIONS, 1)
        ],
    )


def graded_answer(prompt: str) -> str:
    """The answer a ja_grading prompt shows."""
    found = re.search(r"\[回答\]\n(.*?)\n+まず", prompt, re.S)
    if found is None:
        raise AssertionError(f"no answer in the grading prompt: {prompt[:300]}")
    return found.group(1).strip()


def grade_by_length(answer: str) -> int:
    """The canned grader's rule: one point, and one more per 8 characters, at most five."""
    return min(5, 1 + len(answer) // 8)


def length_grader(prompt: str, nth: int = 0) -> str:
    score = grade_by_length(graded_answer(prompt))
    return f"長さで採点しました。\n評価: {score}"
