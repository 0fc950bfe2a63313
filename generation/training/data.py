"""Instruction data sets: import, token statistics, and augmentation (a model answers a set's
unique instructions through an ordinary generation run; the new set is written when it succeeds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction

from evalsite.errors import ServiceError

from .. import instructions, runs
from ..engine.examples import join_instruction
from ..importers import ParsedQuestion
from ..instructions import ParsedExample
from ..models import (
    Answer,
    DatasetAugmentation,
    GenerationRun,
    InstructionDataset,
    InstructionExample,
    LanguageModel,
)
from ..registry import prompt_set_create
from ..templates import as_template, template_for
from ..unique import atomic_named
from ..web_tokenizer import web_tokenizer

DATASET_NAME_TAKEN = "an instruction data set named {name!r} already exists"
NO_TOKENIZER_STATS = "token statistics with {model!r} failed: {problem}"
SERVED_NO_TOKENIZER = "is served by an endpoint; choose a model whose tokenizer is stored here"


def instruction_dataset_create(
    *,
    name: str,
    examples: Sequence[ParsedExample],
    description: str = "",
    source: str = "",
    drop_duplicates: bool = False,
    derived_from: InstructionDataset | None = None,
    extra_stats: dict | None = None,
    user=None,
) -> InstructionDataset:
    """Write a data set and all its rows in one transaction (statistics computed here)."""
    stats = instructions.summary(examples)
    stats["rows_in_file"] = len(examples)
    if drop_duplicates:
        examples, dropped = instructions.drop_duplicates(examples)
        stats["rows"] = len(examples)
        stats["dropped_duplicates"] = dropped
    stats.update(extra_stats or {})
    with atomic_named(InstructionDataset, name, DATASET_NAME_TAKEN):
        dataset = InstructionDataset.objects.create(
            name=name,
            description=description,
            source=source,
            stats=stats,
            derived_from=derived_from,
            created_by=user if getattr(user, "pk", None) else None,
        )
        InstructionExample.objects.bulk_create(
            (
                InstructionExample(
                    dataset=dataset,
                    position=position,
                    instruction=e.instruction,
                    input=e.input,
                    output=e.output,
                )
                for position, e in enumerate(examples, start=1)
            ),
            batch_size=2000,
        )
    return dataset


def instruction_dataset_import(
    *,
    name: str,
    data: bytes,
    filename: str,
    description: str = "",
    drop_duplicates: bool = False,
    tokenizer_model: LanguageModel | None = None,
    user=None,
) -> InstructionDataset:
    """Parse a whole file (and count its tokens) first, then write it: nothing on any error."""
    if InstructionDataset.objects.filter(name=name).exists():
        raise ServiceError(DATASET_NAME_TAKEN.format(name=name))
    examples = instructions.parse_instruction_file(data, filename, limit=settings.MAX_UPLOAD_BYTES)
    extra = {}
    if tokenizer_model is not None:
        kept = instructions.drop_duplicates(examples)[0] if drop_duplicates else examples
        extra["tokens"] = _token_stats(kept, tokenizer_model)
    return instruction_dataset_create(
        name=name,
        examples=examples,
        description=description,
        source=os.path.basename(filename),
        drop_duplicates=drop_duplicates,
        extra_stats=extra,
        user=user,
    )


def usable_examples(dataset: InstructionDataset):
    """The rows fine-tuning uses: all of them, or only those accepted in review when the set is
    ``accepted_only`` (rejected and pending rows then stay out)."""
    rows = dataset.examples.all()
    if dataset.accepted_only:
        rows = rows.filter(review=InstructionExample.Review.ACCEPTED)
    return rows


def instruction_dataset_token_stats(
    *, dataset: InstructionDataset, model: LanguageModel
) -> InstructionDataset:
    """Add token-length percentiles, as ``model`` would be trained on the set, to its stats."""
    rows = dataset.examples.order_by("position").values_list("instruction", "input", "output")
    examples = [ParsedExample(line=0, instruction=i, input=x, output=o) for i, x, o in rows]
    dataset.stats = {**dataset.stats, "tokens": _token_stats(examples, model)}
    dataset.save(update_fields=["stats"])
    return dataset


def _token_stats(examples: Sequence[ParsedExample], model: LanguageModel) -> dict:
    """Token lengths of the prompt, the answer (end token included) and the whole example,
    rendered with the model's prompt template exactly as a fine-tune run renders them.

    Runs in the web process (the API, the admin, an import), so the tokenizer comes from
    ``web_tokenizer``: a model that needs its repository's code is refused, never loaded."""
    from ..engine.examples import IGNORE_INDEX, Example, encode_example

    if model.is_endpoint:
        raise ServiceError(NO_TOKENIZER_STATS.format(model=model.name, problem=SERVED_NO_TOKENIZER))
    row = template_for(model)
    template = as_template(row)
    try:
        tokenizer = web_tokenizer(model)
        prompt_lengths, answer_lengths = [], []
        for e in examples:
            example = Example(instruction=e.instruction, input=e.input, output=e.output)
            rendered = encode_example(tokenizer, template, example, max_length=1 << 30)
            masked = sum(1 for label in rendered["labels"] if label == IGNORE_INDEX)
            prompt_lengths.append(masked)
            answer_lengths.append(len(rendered["labels"]) - masked)
    except (OSError, ValueError) as exc:
        raise ServiceError(NO_TOKENIZER_STATS.format(model=model.name, problem=exc)) from None
    return {
        "model": model.name,
        "prompt_format": model.prompt_format,
        "template": str(row),
        "prompt": instructions.percentiles(prompt_lengths),
        "answer": instructions.percentiles(answer_lengths),
        "total": instructions.percentiles(
            [p + a for p, a in zip(prompt_lengths, answer_lengths, strict=True)]
        ),
    }


def instruction_dataset_unique_instructions(dataset: InstructionDataset) -> list[tuple[str, str]]:
    """Distinct (instruction, input) pairs in the order they first appear."""
    seen: dict[tuple[str, str], None] = {}
    for pair in dataset.examples.order_by("position").values_list("instruction", "input"):
        seen.setdefault(pair, None)
    return list(seen)


AUGMENT_PROMPT_SET = "augment: {source} -> {name}"


def instruction_dataset_augment(
    *,
    dataset: InstructionDataset,
    model: LanguageModel,
    name: str,
    params: dict | None = None,
    seed: int = 0,
    batch_size: int = 8,
    user=None,
) -> DatasetAugmentation:
    """Queue answers by ``model`` to the set's unique instructions; saved as data set ``name``.

    The instructions become a prompt set (each question is ``join_instruction(instruction,
    input)``, the user turn a training example renders) and an ordinary generation run answers
    them on the ``gpu`` queue; when it succeeds the new data set is written.
    """
    if InstructionDataset.objects.filter(name=name).exists():
        raise ServiceError(DATASET_NAME_TAKEN.format(name=name))
    pairs = instruction_dataset_unique_instructions(dataset)
    with transaction.atomic():
        prompt_set = prompt_set_create(
            name=AUGMENT_PROMPT_SET.format(source=dataset.name, name=name)[:200],
            questions=[
                ParsedQuestion(line=index, text=join_instruction(instruction, input_text))
                for index, (instruction, input_text) in enumerate(pairs, start=1)
            ],
            description=f"unique instructions of data set {dataset.name}",
            source=f"instruction data set {dataset.name}",
        )
        run = runs.generation_run_create(
            model=model,
            prompt_set=prompt_set,
            params=params,
            seed=seed,
            batch_size=batch_size,
            user=user,
        )
        return DatasetAugmentation.objects.create(source=dataset, run=run, name=name)


@runs.on_run_succeeded
def _augmentation_finish(run_id: int) -> InstructionDataset | None:
    """Write the data set of a succeeded augmentation run (once; later calls do nothing)."""
    augmentation = (
        DatasetAugmentation.objects.select_related("source", "run__model")
        .filter(run_id=run_id, result__isnull=True)
        .first()
    )
    if augmentation is None or augmentation.run.status != GenerationRun.Status.SUCCEEDED:
        return None
    # Question n of the run's prompt set is the n-th unique pair (data sets never change).
    pairs = instruction_dataset_unique_instructions(augmentation.source)
    answers = dict(
        Answer.objects.filter(run_id=run_id, turn=1).values_list("question__position", "text")
    )
    examples = [
        ParsedExample(line=position, instruction=instruction, input=input_text, output=text)
        for position, (instruction, input_text) in enumerate(pairs, start=1)
        if (text := answers.get(position, "").strip())
    ]
    with transaction.atomic():
        dataset = instruction_dataset_create(
            name=augmentation.name,
            examples=examples,
            description=(
                f"answers by {augmentation.run.model.name} to the unique instructions of "
                f"{augmentation.source.name}"
            ),
            source=f"generation run {run_id}",
            derived_from=augmentation.source,
            extra_stats={
                "augmentation": {
                    "model": augmentation.run.model.name,
                    "run": run_id,
                    "instructions": len(pairs),
                    "empty_answers_dropped": len(pairs) - len(examples),
                }
            },
        )
        augmentation.result = dataset
        augmentation.save(update_fields=["result"])
    return dataset
