"""Training an evolver in the app: (instruction, evolved instruction) pairs become an instruction
data set whose instruction is the rendered rewrite prompt of the pair's operation and whose
output is the evolved instruction; an ordinary LoRA fine-tune run
(generation.training.finetune.finetune_run_create) then teaches a base model to rewrite, and the
registered result is passed to an evolution run as its model.

This is what practitioners do when a local model will not follow the rewrite instruction: a
small set of good rewrites (written by people, or by a stronger model) teaches the format.

Pair files are JSONL, one object per line: ``instruction``, ``evolved`` and optionally
``operation`` (one of engine/operations.OPERATIONS). A pair without one takes the command's
``--operation``, or else one chosen from the line number with the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from evalsite import jsonguard
from evalsite.errors import ServiceError
from generation.instructions import ParsedExample
from generation.models import FineTuneRun, InstructionDataset, LanguageModel
from generation.training.data import DATASET_NAME_TAKEN, instruction_dataset_create
from generation.training.finetune import finetune_run_create

from .engine import operations
from .prompts import as_rewrite_prompt, evolution_prompt_for

BAD_RECORD = "{file}, line {line}: {problem}"
NOT_OBJECT = "{file}, line {line}: expected a JSON object"
MISSING = "{file}, line {line}: {field!r} is missing or empty"
BAD_OPERATION = "{file}, line {line}: " + operations.UNKNOWN_OPERATION
NOT_UTF8 = "{file}: not UTF-8 text"
NO_PAIRS = "{file}: no pairs"


@dataclass(frozen=True)
class Pair:
    line: int
    instruction: str
    evolved: str
    operation: str


def parse_pairs(data: bytes, filename: str, *, operation: str = "", seed: int = 0) -> list[Pair]:
    """Every pair of a JSONL file, or ServiceError naming the file, the line and the problem."""
    if operation and operation not in operations.OPERATIONS:
        raise ServiceError(operations.UNKNOWN_OPERATION.format(op=operation))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError(NOT_UTF8.format(file=filename)) from None
    # The project's JSON guard: bounded nesting, no lone surrogate or NUL in any string.
    try:
        records = jsonguard.jsonl_records(text)
    except jsonguard.RecordError as exc:
        raise ServiceError(
            BAD_RECORD.format(file=filename, line=exc.line, problem=exc.problem)
        ) from None
    pairs = []
    for number, record in records:
        where = {"file": filename, "line": number}
        if not isinstance(record, dict):
            raise ServiceError(NOT_OBJECT.format(**where))
        values = {}
        for field in ("instruction", "evolved"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise ServiceError(MISSING.format(**where, field=field))
            values[field] = value.strip()
        op = record.get("operation") or operation
        if op and op not in operations.OPERATIONS:
            raise ServiceError(BAD_OPERATION.format(**where, op=op))
        op = op or operations.choose_operation(seed, 0, number)
        pairs.append(Pair(number, values["instruction"], values["evolved"], op))
    if not pairs:
        raise ServiceError(NO_PAIRS.format(file=filename))
    return pairs


def evolver_examples(pairs: list[Pair]) -> list[ParsedExample]:
    """(rendered rewrite prompt -> evolved instruction) rows, rendered with the current prompt
    of each pair's operation (the prompt an evolution run will show the evolver)."""
    prompts = {}
    examples = []
    for pair in pairs:
        if pair.operation not in prompts:
            prompts[pair.operation] = as_rewrite_prompt(evolution_prompt_for(pair.operation))
        text = operations.render(prompts[pair.operation], pair.instruction)
        examples.append(ParsedExample(line=pair.line, instruction=text, output=pair.evolved))
    return examples


def evolver_train(
    *,
    data: bytes,
    filename: str,
    base_model: LanguageModel,
    name: str = "",
    operation: str = "",
    seed: int = 0,
    params: dict | None = None,
    user=None,
    enqueue: bool = True,
) -> tuple[InstructionDataset, FineTuneRun]:
    """Write the pairs as a data set and queue a LoRA fine-tune of ``base_model`` on it (one
    transaction: nothing is written when either step refuses). ``name``: the resulting model's
    (the data set is ``<name>-pairs``; blank: chosen from the run)."""
    pairs = parse_pairs(data, filename, operation=operation, seed=seed)
    examples = evolver_examples(pairs)
    dataset_name = f"{name}-pairs" if name else f"evolver-pairs-{filename.rsplit('/', 1)[-1]}"
    if InstructionDataset.objects.filter(name=dataset_name).exists():
        raise ServiceError(DATASET_NAME_TAKEN.format(name=dataset_name))
    with transaction.atomic():
        dataset = instruction_dataset_create(
            name=dataset_name,
            examples=examples,
            description=f"Evolver training pairs from {filename}: rewrite prompt -> evolved",
            source=filename.rsplit("/", 1)[-1],
            extra_stats={"operations": _by_operation(pairs)},
            user=user,
        )
        run = finetune_run_create(
            base_model=base_model,
            datasets=[(dataset, None)],
            method=FineTuneRun.Method.LORA,
            params=params,
            model_name=name,
            user=user,
            enqueue=enqueue,
        )
    return dataset, run


def _by_operation(pairs: list[Pair]) -> dict:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.operation] = counts.get(pair.operation, 0) + 1
    return counts
