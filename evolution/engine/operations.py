"""Evol-Instruct operations and their rewrite prompts. Plain module, no Django.

The idea is the WizardLM paper's (Xu et al., 2023): an instruction is rewritten by a model, either
in depth (the same task made harder in one chosen way) or in breadth (a new task of the same
domain), round after round. The prompts below are the team's own Japanese wording, kept short
so that a small local model (the tiny model reads 512 tokens) sees the whole of it. They are
Jinja2 rendered in the prompt templates' sandbox over one variable, ``instruction``.

Which operation an instruction gets depends only on (seed, round, row key): the same run
repeated, or resumed, chooses the same operations.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from generation.engine.render import sandboxed

ADD_CONSTRAINT, DEEPEN, CONCRETIZE = "add_constraint", "deepen", "concretize"
ADD_REASONING, COMPLICATE, BREADTH = "add_reasoning", "complicate", "breadth"
IN_DEPTH = (ADD_CONSTRAINT, DEEPEN, CONCRETIZE, ADD_REASONING, COMPLICATE)
IN_BREADTH = (BREADTH,)
OPERATIONS = IN_DEPTH + IN_BREADTH
VARIABLES = ("instruction",)

# Labels of the two blocks every preset shows; the prompt-copy rule looks for them (and for the
# other bracketed labels a template writes) in the evolved instruction.
GIVEN, REWRITTEN = "#与えられた指示#", "#書き換えた指示#"

_HEAD = """\
あなたは指示文を作り直す係です。次の指示を、人が読んで自然に答えられる一つの指示に書き換えてください。
"""
_TAIL = (
    """
"""
    + GIVEN
    + """
{{ instruction }}

"""
    + REWRITTEN
    + """
"""
)

_HOW = {
    ADD_CONSTRAINT: "答え方に条件を一つ加えてください（字数、形式、含めるべき観点など）。",
    DEEPEN: "問われている内容をもっと深く、根本的な理由や背景まで尋ねる指示にしてください。",
    CONCRETIZE: "一般的な言い方を、具体的な場面や対象をはっきり示した指示にしてください。",
    ADD_REASONING: "答えるには何段階かの考えを順に示す必要がある指示にしてください。",
    COMPLICATE: "扱う要素を一つ増やし、少し込み入った状況の指示にしてください。",
}
_BREADTH_HEAD = """\
あなたは指示文を考える係です。次の指示と同じ分野で、内容の違う新しい指示を一つ作ってください。長さと難しさは同じくらいにしてください。
"""

PRESETS: dict[str, str] = {
    **{op: _HEAD + how + "\n" + _TAIL for op, how in _HOW.items()},
    BREADTH: _BREADTH_HEAD + _TAIL,
}
DESCRIPTIONS = {
    ADD_CONSTRAINT: "in depth: add one constraint on the answer",
    DEEPEN: "in depth: ask deeper (reasons, background)",
    CONCRETIZE: "in depth: replace general wording by a concrete case",
    ADD_REASONING: "in depth: require several explicit reasoning steps",
    COMPLICATE: "in depth: one more element, a more involved situation",
    BREADTH: "in breadth: a new instruction of the same domain",
}

UNKNOWN_OPERATION = "unknown operation {op!r}; expected one of: " + ", ".join(OPERATIONS)
MISSING_INSTRUCTION = "the rewrite prompt never shows the instruction ({{ instruction }})"


@dataclass(frozen=True)
class RewritePrompt:
    """A rewrite prompt (mirrors an ``EvolutionPrompt`` row)."""

    operation: str
    version: int
    template: str


def choose_operation(seed: int, round_: int, key: object, operations=OPERATIONS) -> str:
    """The operation for one instruction in one round: a pure function of its arguments."""
    digest = hashlib.sha256(f"{seed}:{round_}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).choice(tuple(operations))


def render(prompt: RewritePrompt, instruction: str) -> str:
    """The rewrite prompt for ``instruction`` (one user turn, without a closing newline)."""
    return sandboxed(prompt.template).render(instruction=instruction.strip()).strip()


def problems(template: str) -> str | None:
    """What is wrong with a rewrite prompt's source (None when it renders and shows the
    instruction)."""
    from jinja2 import TemplateError

    marker = "<<instruction>>"
    try:
        text = sandboxed(template).render(instruction=marker)
    except TemplateError as exc:
        return f"the Jinja source failed: {exc}"
    if marker not in text:
        return MISSING_INSTRUCTION
    return None


_QUOTES = "「」『』\"'“”` \t\n"


def evolved_from_output(output: str) -> str:
    """The evolved instruction in a model's output: the text, with a leading copy of the
    answer label and surrounding quotes taken off (what else it wrote is kept for the rules)."""
    text = (output or "").strip()
    if text.startswith(REWRITTEN):
        text = text[len(REWRITTEN) :]
    return text.strip().strip(_QUOTES).strip()
