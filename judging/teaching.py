"""Teaching a small model to judge: verdict examples, then the app's own fine-tuning.

The tests and the demo need a local judge whose output parses, and the only local model on
every machine is the project's tiny one (``generation/engine/tiny.py``). Out of the box it
writes Japanese-looking text and never a verdict line, so it is taught the format the way a
team would teach any small model: a few hundred (judge prompt -> short reason + verdict)
examples as an instruction data set, and an ordinary fine-tune run on it (``generation.training``,
full fine-tuning, run in this process). The result is a registered ``LanguageModel``.

Why a short judge prompt for the tiny model (``TINY_PAIRWISE``, the ``tiny_pairwise`` row):
its context is 512 tokens (``MODEL_SHAPE['max_position_embeddings']``) and it was trained on
examples of at most 192. The shipped ``ja_pairwise`` prompt takes about 300 tokens before the
question and answers are filled in; the fixture set's longest question (195 tokens) with two
96-token answers (the demo's limit) no longer fits. The short prompt takes about 70, and has no
system prompt, so the judge's input is its user turn alone, as an instruction-data example
renders it.

What the judge learns to prefer (``preferred``), stated so a reader can check its verdicts:
the answer that uses more of the question's characters (distinct characters other than
whitespace and punctuation) wins; equal counts are a tie. Japanese has no spaces between
words, so characters stand in for the question's words. It is a rule a 2-layer model can
half-learn, not a judgment of quality: the point is a judge whose output parses and whose
verdicts depend on the answers, so that every path of a judge run is exercised for real.
"""

from __future__ import annotations

import json
import random
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from evalsite.errors import ServiceError
from generation.engine.tiny import CORPUS_FILE, FIXTURES

from .engine import verdicts
from .engine.verdicts import FIRST, LAST_LINE_123, PAIRWISE, SECOND, TIE, JudgeTemplate

TINY_PAIRWISE = JudgeTemplate(
    name="tiny_pairwise",
    version=1,
    kind=PAIRWISE,
    verdict_format=LAST_LINE_123,
    template="""\
二つの回答のうち、質問により合う方を選んでください。
[質問]
{{ question }}
[回答1]
{{ answer_1 }}
[回答2]
{{ answer_2 }}
最後の行に 1 (回答1)、2 (回答2)、3 (同じくらい) のどれかを書いてください。
""",
)
TINY_PAIRWISE_DESCRIPTION = (
    "A short pairwise prompt for small local judges (the tiny model's 512-token context); "
    "see judging/teaching.py"
)

# The reason a taught judge writes before its verdict line, per verdict (its own words).
REASONS = {
    FIRST: ("回答1の方が質問の言葉に沿って答えています。", "回答1の方が質問に近い内容です。"),
    SECOND: ("回答2の方が質問の言葉に沿って答えています。", "回答2の方が質問に近い内容です。"),
    TIE: ("どちらも同じくらい質問に沿っています。", "二つの回答に大きな差はありません。"),
}
DIGITS = {FIRST: "1", SECOND: "2", TIE: "3"}

# Full fine-tuning of the tiny model: 300 examples take 8-15 s on one CPU core.
# A high learning rate because the model is tiny and was itself trained at 1e-2.
TINY_TEACHING = {
    "learning_rate": 2e-3,
    "epochs": 3.0,
    "batch_size": 8,
    "gradient_accumulation": 1,
    "max_length": 512,
    "eval_fraction": 0.0,
    "warmup_ratio": 0.05,
    "save_steps": 1000,
}
# A judge decodes greedily and needs room only for a reason and a verdict line.
JUDGE_DEFAULTS = {"do_sample": False, "max_new_tokens": 48}

NO_PAIRS = "no answer pairs to make verdict examples from"
NOT_PAIRWISE = "judge prompt {name!r} is a {kind} prompt; verdict examples need a pairwise one"
NOT_LAST_LINE = "judge prompt {name!r} reads {format}; a taught judge writes a last line 1 / 2 / 3"
TEACHING_FAILED = "teaching judge {name!r} failed: fine-tune run {run} {status}: {error}"


@dataclass(frozen=True)
class Pair:
    """A question and two answers to it (in no particular order)."""

    question: str
    answer_x: str
    answer_y: str


def _characters(text: str) -> set[str]:
    """Distinct characters of ``text`` that carry meaning (no whitespace, punctuation, symbols)."""
    return {
        ch
        for ch in unicodedata.normalize("NFKC", text)
        if not ch.isspace() and unicodedata.category(ch)[0] not in "PSZC"
    }


def preferred(question: str, answer_1: str, answer_2: str) -> str:
    """FIRST, SECOND or TIE by the teaching rule: more of the question's characters wins."""
    wanted = _characters(question)
    first = len(wanted & _characters(answer_1))
    second = len(wanted & _characters(answer_2))
    if first == second:
        return TIE
    return FIRST if first > second else SECOND


def _engine_prompt(prompt) -> JudgeTemplate:
    """A ``JudgePrompt`` row or an engine ``JudgeTemplate`` as the engine's ``JudgeTemplate``."""
    if isinstance(prompt, JudgeTemplate):
        return prompt
    from .prompts import as_judge_template

    return as_judge_template(prompt)


def verdict_examples(prompt, pairs: Sequence[Pair], n: int, *, seed: int = 0) -> list:
    """``n`` training examples (``generation.engine.examples.Example``): the judge prompt
    rendered over a pair in a random order as the instruction, a short reason and the verdict
    line as the output.

    Pairs are drawn with replacement (seeded), each in a random order, so a few dozen pairs give
    a few hundred distinct examples and both orders of a pair are taught. The label is
    ``preferred``; examples are balanced over the three verdicts where the pairs allow it, so
    the judge does not learn to always answer the same digit.
    """
    from generation.engine.examples import Example

    judge = _engine_prompt(prompt)
    if judge.kind != PAIRWISE:
        raise ValueError(NOT_PAIRWISE.format(name=judge.name, kind=judge.kind))
    if judge.verdict_format != LAST_LINE_123:
        raise ValueError(NOT_LAST_LINE.format(name=judge.name, format=judge.verdict_format))
    if not pairs:
        raise ValueError(NO_PAIRS)
    rng = random.Random(seed)
    by_verdict: dict[str, list[tuple[str, str, str]]] = {FIRST: [], SECOND: [], TIE: []}
    for pair in pairs:
        for one, two in ((pair.answer_x, pair.answer_y), (pair.answer_y, pair.answer_x)):
            by_verdict[preferred(pair.question, one, two)].append((pair.question, one, two))
    kinds = [verdict for verdict, shown in by_verdict.items() if shown]
    examples = []
    for index in range(n):
        verdict = kinds[index % len(kinds)]
        question, one, two = rng.choice(by_verdict[verdict])
        text = verdicts.render(judge, question=question, answer_1=one, answer_2=two)
        reason = rng.choice(REASONS[verdict])
        examples.append(Example(instruction=text.strip(), output=f"{reason}\n{DIGITS[verdict]}"))
    rng.shuffle(examples)
    return examples


def corpus_pairs(*, seed: int = 0, limit: int | None = None) -> list[Pair]:
    """Pairs from the tiny model's own training text (fixtures/tiny_corpus_ja.jsonl): each
    question with its own answer and another question's answer (the usual clear case), and,
    for a quarter of them, two other questions' answers (often a tie)."""
    with (FIXTURES / CORPUS_FILE).open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rng = random.Random(seed)
    pairs = []
    for index, row in enumerate(rows):
        others = [r["answer"] for r in rng.sample(rows, 3) if r is not row]
        if index % 4 == 3:
            pairs.append(Pair(row["question"], others[0], others[1]))
        else:
            pairs.append(Pair(row["question"], row["answer"], others[0]))
    rng.shuffle(pairs)
    return pairs[:limit] if limit else pairs


def tiny_pairwise_prompt():
    """The ``tiny_pairwise`` judge prompt row (version 1), created the first time it is asked
    (through the judge-prompt service, as an admin adding a prompt would)."""
    from .models import JudgePrompt
    from .prompts import judge_prompt_create

    def version_1():
        return JudgePrompt.objects.filter(name=TINY_PAIRWISE.name, version=1).first()

    found = version_1()
    if found is not None:
        return found
    try:
        return judge_prompt_create(
            name=TINY_PAIRWISE.name,
            kind=TINY_PAIRWISE.kind,
            template=TINY_PAIRWISE.template,
            verdict_format=TINY_PAIRWISE.verdict_format,
            system_prompt=TINY_PAIRWISE.system_prompt,
            description=TINY_PAIRWISE_DESCRIPTION,
            source="judging/teaching.py",
        )
    except ServiceError:  # made meanwhile by another process
        found = version_1()
        if found is None:
            raise
        return found


@dataclass(frozen=True)
class Taught:
    model: object  # the registered LanguageModel
    run: object  # the FineTuneRun that taught it
    examples: int
    seconds: float


def teach_judge(
    *,
    base,
    name: str,
    examples: Sequence,
    method: str = "full",
    params: dict | None = None,
    user=None,
) -> Taught:
    """Fine-tune ``base`` (a LanguageModel with local weights) on verdict ``examples`` and
    register the result as model ``name``, its generation defaults set for judging (greedy, 48
    new tokens; a judge run's own decoding still decides).

    Goes through the app's own path: the examples become an instruction data set
    ("judge teaching: NAME", numbered when that name is taken), and a fine-tune run on it is
    created and executed in this process (no worker needed; it takes the run's lock as a
    worker would). Raises ServiceError when the run does not succeed. ``params`` override
    ``TINY_TEACHING``.
    """
    from generation.instructions import ParsedExample
    from generation.models import FineTuneRun, InstructionDataset
    from generation.registry import language_model_update
    from generation.training.data import instruction_dataset_create
    from generation.training.finetune import finetune_run_create, finetune_run_execute

    started = time.monotonic()
    # A failed earlier attempt left its data set: the next one gets a numbered name.
    dataset_name, attempt = f"judge teaching: {name}", 1
    while InstructionDataset.objects.filter(name=dataset_name).exists():
        attempt += 1
        dataset_name = f"judge teaching: {name} ({attempt})"
    dataset = instruction_dataset_create(
        name=dataset_name,
        examples=[
            ParsedExample(line=i, instruction=e.instruction, input=e.input, output=e.output)
            for i, e in enumerate(examples, start=1)
        ],
        description=f"verdict examples that taught judge {name} (judging/teaching.py)",
        source="judging/teaching.py",
        user=user,
    )
    run = finetune_run_create(
        base_model=base,
        datasets=[(dataset, None)],
        method=method,
        params={**TINY_TEACHING, **(params or {})},
        model_name=name,
        user=user,
        enqueue=False,
    )
    finetune_run_execute(run_id=run.pk)
    run.refresh_from_db()
    if run.status != FineTuneRun.Status.SUCCEEDED or run.result_model is None:
        raise ServiceError(
            TEACHING_FAILED.format(
                name=name, run=run.pk, status=run.status, error=run.error.strip()[-500:]
            )
        )
    model = language_model_update(
        model=run.result_model, changes={"generation_defaults": JUDGE_DEFAULTS}
    )
    return Taught(model, run, len(examples), time.monotonic() - started)
