"""Writes for the generation app: prompt sets, models, generation runs, instruction data sets,
fine-tune runs.

Each service does one whole state change. Long work (generation, fine-tuning) is claimed with one
conditional UPDATE, commits its progress as it goes (answers per batch; loss per step and a
checkpoint every few steps) and keeps a heartbeat on the run row, so a run whose worker died is
requeued and resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import instructions, prompts
from .importers import ParsedQuestion, parse_prompt_file
from .instructions import ParsedExample
from .models import (
    Answer,
    DatasetAugmentation,
    FineTuneLog,
    FineTuneRun,
    FineTuneRunDataset,
    GenerationRun,
    InstructionDataset,
    InstructionExample,
    LanguageModel,
    PromptSet,
    Question,
)

log = logging.getLogger(__name__)

NAME_TAKEN = "a prompt set named {name!r} already exists (use replace to overwrite it)"
SET_HAS_ANSWERS = (
    "prompt set {name!r} already has answers and is read-only; import under a new name"
)
MODEL_NAME_TAKEN = "a model named {name!r} already exists"
BAD_FORMAT = "unknown prompt format {fmt!r}; expected one of: " + ", ".join(prompts.FORMATS)
EMPTY_PROMPT_SET = "prompt set {name!r} has no questions"
CANNOT_CANCEL = "run {id} is {status}; only queued or running runs can be cancelled"
CANNOT_RETRY = "run {id} is {status}; only failed or cancelled runs can be retried"
IMPORTED_RUN = "run {id} holds imported answers; there is nothing to generate"
UNKNOWN_PARAMS = "unknown generation parameters: {keys}"
REMOTE_CODE_SUPERUSER = "only a superuser can turn on trust_remote_code"
ADAPTER_NEEDS_BASE = "an adapter needs a base model"


# Generation parameters a run may set (the rest of GenerationConfig keeps the model's defaults).
# The same list as engine.generate.ALLOWED_PARAMS (a test keeps them equal), kept here so the web
# process can check a request without importing torch.
GENERATION_PARAMS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
    }
)


class ServiceError(ValueError):
    """A request the data does not allow; the message is meant for the person who asked."""


# --- prompt sets -------------------------------------------------------------------------------


@transaction.atomic
def prompt_set_create(
    *,
    name: str,
    questions: Iterable[ParsedQuestion],
    description: str = "",
    source: str = "",
    replace: bool = False,
) -> PromptSet:
    """Create (or, with ``replace``, rebuild) a prompt set in one transaction."""
    existing = PromptSet.objects.select_for_update().filter(name=name).first()
    if existing is not None:
        if not replace:
            raise ServiceError(NAME_TAKEN.format(name=name))
        if existing.has_answers:
            raise ServiceError(SET_HAS_ANSWERS.format(name=name))
        existing.delete()
    prompt_set = PromptSet.objects.create(name=name, description=description, source=source)
    Question.objects.bulk_create(
        Question(
            prompt_set=prompt_set,
            position=position,
            text=q.text,
            category=q.category,
            external_id=q.external_id,
        )
        for position, q in enumerate(questions, start=1)
    )
    return prompt_set


def prompt_set_import(
    *, name: str, data: bytes, filename: str, replace: bool = False, description: str = ""
) -> PromptSet:
    """Parse a whole file first, then write it in one transaction (nothing on any error)."""
    questions = parse_prompt_file(data, filename, limit=settings.MAX_UPLOAD_BYTES)
    return prompt_set_create(
        name=name,
        questions=questions,
        description=description,
        source=os.path.basename(filename),
        replace=replace,
    )


# --- models ------------------------------------------------------------------------------------


def language_model_register(
    *,
    name: str,
    name_or_path: str,
    prompt_format: str = prompts.LINE_SFT,
    revision: str = "",
    maker: str = "",
    generation_defaults: dict | None = None,
    trust_remote_code: bool = False,
    base_model: LanguageModel | None = None,
    adapter_path: str = "",
    user=None,
) -> LanguageModel:
    if prompt_format not in prompts.FORMATS:
        raise ServiceError(BAD_FORMAT.format(fmt=prompt_format))
    if trust_remote_code and user is not None and not user.is_superuser:
        raise ServiceError(REMOTE_CODE_SUPERUSER)
    if adapter_path and base_model is None:
        raise ServiceError(ADAPTER_NEEDS_BASE)
    try:
        with transaction.atomic():
            return LanguageModel.objects.create(
                name=name,
                name_or_path=name_or_path,
                prompt_format=prompt_format,
                revision=revision,
                maker=maker,
                generation_defaults=generation_defaults or {},
                trust_remote_code=trust_remote_code,
                base_model=base_model,
                adapter_path=adapter_path,
            )
    except IntegrityError:
        if LanguageModel.objects.filter(name=name).exists():
            raise ServiceError(MODEL_NAME_TAKEN.format(name=name)) from None
        raise


def storage_relative(path: str | Path) -> str:
    """A path under MODEL_STORAGE as the relative string rows keep; others unchanged."""
    path = Path(path)
    root = Path(settings.MODEL_STORAGE)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --- generation runs ---------------------------------------------------------------------------


def generation_run_create(
    *,
    model: LanguageModel,
    prompt_set: PromptSet,
    params: dict | None = None,
    seed: int = 0,
    batch_size: int = 8,
    user=None,
    enqueue: bool = True,
) -> GenerationRun:
    """Record a queued run (with its parameter snapshot) and enqueue it once committed."""
    total = prompt_set.questions.count()
    if total == 0:
        raise ServiceError(EMPTY_PROMPT_SET.format(name=prompt_set.name))
    snapshot = {**model.generation_defaults, **(params or {})}
    unknown = sorted(set(snapshot) - GENERATION_PARAMS)
    if unknown:
        raise ServiceError(UNKNOWN_PARAMS.format(keys=", ".join(unknown)))
    with transaction.atomic():
        run = GenerationRun.objects.create(
            model=model,
            prompt_set=prompt_set,
            params=snapshot,
            seed=seed,
            batch_size=batch_size,
            total=total,
            created_by=user if getattr(user, "pk", None) else None,
        )
        if enqueue:
            _enqueue_on_commit(run.pk)
    return run


def _enqueue_on_commit(run_id: int) -> None:
    from .tasks import generation_run_execute_task

    transaction.on_commit(lambda: generation_run_execute_task.delay(run_id))


@transaction.atomic
def generation_run_create_imported(
    *, model: LanguageModel, prompt_set: PromptSet, answers: dict[int, str]
) -> GenerationRun:
    """A succeeded run holding answers that came from elsewhere (keyed by question id)."""
    now = timezone.now()
    run = GenerationRun.objects.create(
        model=model,
        prompt_set=prompt_set,
        imported=True,
        status=GenerationRun.Status.SUCCEEDED,
        total=len(answers),
        done=len(answers),
        started_at=now,
        finished_at=now,
    )
    Answer.objects.bulk_create(
        Answer(run=run, question_id=qid, text=text) for qid, text in answers.items()
    )
    return run


def generation_run_cancel(*, run: GenerationRun) -> GenerationRun:
    """Queued runs stop at once; a running worker stops before its next batch."""
    updated = GenerationRun.objects.filter(pk=run.pk, status__in=GenerationRun.ACTIVE).update(
        status=GenerationRun.Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    if not updated:
        raise ServiceError(CANNOT_CANCEL.format(id=run.pk, status=run.status))
    return run


def generation_run_retry(*, run: GenerationRun) -> GenerationRun:
    """Put a failed or cancelled run back in the queue; it generates only missing answers."""
    if run.imported:
        raise ServiceError(IMPORTED_RUN.format(id=run.pk))
    with transaction.atomic():
        updated = GenerationRun.objects.filter(
            pk=run.pk,
            status__in=[GenerationRun.Status.FAILED, GenerationRun.Status.CANCELLED],
        ).update(status=GenerationRun.Status.QUEUED, error="", finished_at=None)
        if updated:
            _enqueue_on_commit(run.pk)
    run.refresh_from_db()
    if not updated:
        raise ServiceError(CANNOT_RETRY.format(id=run.pk, status=run.status))
    return run


def generation_runs_requeue_stale() -> list[int]:
    """Requeue running runs whose heartbeat stopped (their worker died); returns their ids."""
    requeued = _requeue_stale(GenerationRun, _enqueue_on_commit)
    if requeued:
        log.warning("requeued generation runs with a stale heartbeat: %s", requeued)
    return requeued


def _requeue_stale(model, enqueue) -> list[int]:
    """Put running rows of ``model`` (a run model) with a stale heartbeat back in the queue."""
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    stale = Q(status=model.Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    requeued = []
    for run_id in model.objects.filter(stale).values_list("pk", flat=True):
        with transaction.atomic():
            # Conditional UPDATE: another process may have requeued or finished it meanwhile.
            if model.objects.filter(Q(pk=run_id) & stale).update(
                status=model.Status.QUEUED, worker=""
            ):
                enqueue(run_id)
                requeued.append(run_id)
    return requeued


def _drop_stale_connection() -> None:
    """Start a long task on a usable connection (a worker's may have timed out meanwhile).

    Inside a transaction (a caller's, or a test's) the connection is left alone: closing it
    there would throw the transaction away.
    """
    if not connection.in_atomic_block:
        close_old_connections()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim(run_id: int, worker: str, model=GenerationRun, **only) -> bool:
    """Take the run for this worker: one conditional UPDATE, so two workers never both run it."""
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    now = timezone.now()
    claimable = Q(status=model.Status.QUEUED) | Q(
        status=model.Status.RUNNING, heartbeat_at__lt=cutoff
    )
    claimed = model.objects.filter(Q(pk=run_id) & claimable, **only).update(
        status=model.Status.RUNNING,
        worker=worker,
        heartbeat_at=now,
        error="",
    )
    if claimed:
        model.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
        model.objects.filter(pk=run_id).update(attempts=F("attempts") + 1)
    return bool(claimed)


class _Heartbeat(threading.Thread):
    """Touches the run row every few seconds while this worker holds it."""

    def __init__(self, run_id: int, worker: str, interval: float, model=GenerationRun):
        super().__init__(daemon=True, name=f"heartbeat-{model._meta.model_name}-{run_id}")
        self.run_id, self.worker, self.interval, self.model = run_id, worker, interval, model
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                self.model.objects.filter(
                    pk=self.run_id, status=self.model.Status.RUNNING, worker=self.worker
                ).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def language_model_load(*, model: LanguageModel):
    """Tokenizer and weights of a registered model (base + adapter for a LoRA result)."""
    from .engine.loading import load_model, load_tokenizer, resolve_path

    storage = settings.MODEL_STORAGE
    weights = model.base_model if model.adapter_path else model
    path = resolve_path(weights.name_or_path, storage)
    options = {
        "revision": weights.revision or None,
        "trust_remote_code": weights.trust_remote_code,
    }
    tokenizer = load_tokenizer(path, **options)
    adapter = resolve_path(model.adapter_path, storage) if model.adapter_path else None
    return tokenizer, load_model(path, adapter_path=adapter, **options)


def generation_run_execute(*, run_id: int) -> GenerationRun | None:
    """Claim a run and generate the answers it is missing. Returns None if it was not claimable.

    Safe to call any number of times for the same run (redelivered or requeued tasks).
    """
    _drop_stale_connection()
    worker = worker_name()
    if not _claim(run_id, worker, imported=False):
        log.info("run %s is not claimable (finished, cancelled or held by a live worker)", run_id)
        return None
    heartbeat = _Heartbeat(run_id, worker, settings.RUN_HEARTBEAT_INTERVAL)
    heartbeat.start()
    try:
        _generate_missing(run_id, worker)
        _augmentation_finish(run_id)
    except Exception:
        log.exception("generation run %s failed", run_id)
        GenerationRun.objects.filter(pk=run_id, worker=worker).update(
            status=GenerationRun.Status.FAILED,
            error=traceback.format_exc(limit=8)[-4000:],
            finished_at=timezone.now(),
        )
    finally:
        heartbeat.stop()
    return GenerationRun.objects.get(pk=run_id)


def _still_mine(run_id: int, worker: str) -> bool:
    return GenerationRun.objects.filter(
        pk=run_id, status=GenerationRun.Status.RUNNING, worker=worker
    ).exists()


def _generate_missing(run_id: int, worker: str) -> None:
    from .engine.generate import Prompt, generate_answers

    run = GenerationRun.objects.select_related("model", "model__base_model", "prompt_set").get(
        pk=run_id
    )
    answered = set(Answer.objects.filter(run=run).values_list("question_id", flat=True))
    missing = [
        Prompt(key=q.pk, question=q.text)
        for q in run.prompt_set.questions.order_by("position")
        if q.pk not in answered
    ]
    GenerationRun.objects.filter(pk=run_id).update(done=len(answered))
    if missing:
        tokenizer, model = language_model_load(model=run.model)

        def on_batch(batch) -> None:
            with transaction.atomic():
                # ignore_conflicts: an answer already stored by an earlier attempt stays as is.
                Answer.objects.bulk_create(
                    [
                        Answer(
                            run_id=run_id, question_id=g.key, text=g.text, new_tokens=g.new_tokens
                        )
                        for g in batch
                    ],
                    ignore_conflicts=True,
                )
                GenerationRun.objects.filter(pk=run_id).update(
                    done=Answer.objects.filter(run_id=run_id).count(),
                    heartbeat_at=timezone.now(),
                )

        generate_answers(
            model,
            tokenizer,
            missing,
            fmt=run.model.prompt_format,
            params=run.params,
            seed=run.seed,
            batch_size=run.batch_size,
            on_batch=on_batch,
            should_stop=lambda: not _still_mine(run_id, worker),
        )
    done = Answer.objects.filter(run_id=run_id).count()
    finished = done >= run.total
    GenerationRun.objects.filter(
        pk=run_id, status=GenerationRun.Status.RUNNING, worker=worker
    ).update(
        done=done,
        status=GenerationRun.Status.SUCCEEDED if finished else GenerationRun.Status.FAILED,
        error="" if finished else f"stopped with {done} of {run.total} answers",
        finished_at=timezone.now(),
    )


# --- instruction data sets ---------------------------------------------------------------------

DATASET_NAME_TAKEN = "an instruction data set named {name!r} already exists"
NO_TOKENIZER_STATS = "token statistics with {model!r} failed: {problem}"


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
    try:
        with transaction.atomic():
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
    except IntegrityError:
        if InstructionDataset.objects.filter(name=name).exists():
            raise ServiceError(DATASET_NAME_TAKEN.format(name=name)) from None
        raise
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


def instruction_dataset_token_stats(
    *, dataset: InstructionDataset, model: LanguageModel
) -> InstructionDataset:
    """Add token-length percentiles, as ``model`` would be trained on the set, to its stats."""
    rows = dataset.examples.order_by("position").values_list("instruction", "input", "output")
    examples = [ParsedExample(line=0, instruction=i, input=x, output=o) for i, x, o in rows]
    dataset.stats = {**dataset.stats, "tokens": _token_stats(examples, model)}
    dataset.save(update_fields=["stats"])
    return dataset


def language_model_tokenizer(*, model: LanguageModel):
    """The tokenizer of a registered model (its base model's, for an adapter)."""
    from .engine.loading import load_tokenizer, resolve_path

    weights = model.base_model if model.adapter_path else model
    return load_tokenizer(
        resolve_path(weights.name_or_path, settings.MODEL_STORAGE),
        revision=weights.revision or None,
        trust_remote_code=weights.trust_remote_code,
    )


def _token_stats(examples: Sequence[ParsedExample], model: LanguageModel) -> dict:
    """Token lengths of the prompt, the answer (end token included) and the whole example,
    rendered in the model's prompt format exactly as a fine-tune run renders them."""
    from .engine.train import IGNORE_INDEX, Example, render_example

    try:
        tokenizer = language_model_tokenizer(model=model)
        prompt_lengths, answer_lengths = [], []
        for e in examples:
            example = Example(instruction=e.instruction, input=e.input, output=e.output)
            rendered = render_example(tokenizer, model.prompt_format, example, max_length=1 << 30)
            masked = sum(1 for label in rendered["labels"] if label == IGNORE_INDEX)
            prompt_lengths.append(masked)
            answer_lengths.append(len(rendered["labels"]) - masked)
    except (OSError, ValueError) as exc:
        raise ServiceError(NO_TOKENIZER_STATS.format(model=model.name, problem=exc)) from None
    return {
        "model": model.name,
        "prompt_format": model.prompt_format,
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
    input)``, the text the prompt formats render) and an ordinary generation run answers them on
    the ``gpu`` queue; when it succeeds the new data set is written.
    """
    if InstructionDataset.objects.filter(name=name).exists():
        raise ServiceError(DATASET_NAME_TAKEN.format(name=name))
    pairs = instruction_dataset_unique_instructions(dataset)
    with transaction.atomic():
        prompt_set = prompt_set_create(
            name=AUGMENT_PROMPT_SET.format(source=dataset.name, name=name)[:200],
            questions=[
                ParsedQuestion(line=index, text=prompts.join_instruction(instruction, input_text))
                for index, (instruction, input_text) in enumerate(pairs, start=1)
            ],
            description=f"unique instructions of data set {dataset.name}",
            source=f"instruction data set {dataset.name}",
        )
        run = generation_run_create(
            model=model,
            prompt_set=prompt_set,
            params=params,
            seed=seed,
            batch_size=batch_size,
            user=user,
        )
        return DatasetAugmentation.objects.create(source=dataset, run=run, name=name)


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
    answers = dict(Answer.objects.filter(run_id=run_id).values_list("question__position", "text"))
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


# --- fine-tune runs ----------------------------------------------------------------------------

UNKNOWN_METHOD = "unknown fine-tuning method {method!r}; expected one of: lora, full, qlora"
BASE_IS_ADAPTER = (
    "model {name!r} is a LoRA adapter; merge it into a standalone model first "
    "(admin action 'merge adapter') and fine-tune that"
)
NO_DATASETS = "choose at least one instruction data set"
DATASET_TWICE = "data set {name!r} is listed twice"
EMPTY_DATASET = "data set {name!r} has no rows"
TOO_MANY_ROWS = "data set {name!r} has {count} rows; cannot sample {rows}"
BAD_ROWS = "rows for {name!r} must be a positive number (or blank for all)"
UNKNOWN_HYPERPARAMETERS = "unknown fine-tuning parameters: {keys}"
BAD_HYPERPARAMETER = "{name} must be {rule} (got {value!r})"
CANNOT_CANCEL_FINETUNE = (
    "fine-tune run {id} is {status}; only queued or running runs can be cancelled"
)
CANNOT_RESUME = "fine-tune run {id} is {status}; only failed or cancelled runs can be resumed"
MERGE_NEEDS_ADAPTER = "model {name!r} has no LoRA adapter to merge"

# Full fine-tuning changes every weight: a LoRA learning rate would wreck the model.
FULL_LEARNING_RATE = 2e-5


def _number(rule: str, test: Callable[[float], bool], kind: type = float):
    def check(name: str, value) -> object:
        bad = isinstance(value, bool) or not isinstance(value, int | float)
        if bad or (kind is int and not float(value).is_integer()) or not test(value):
            raise ServiceError(BAD_HYPERPARAMETER.format(name=name, rule=rule, value=value))
        return kind(value)

    return check


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ServiceError(BAD_HYPERPARAMETER.format(name=name, rule="true or false", value=value))
    return value


def _module_list(name: str, value) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        rule = "a list of module names"
        raise ServiceError(BAD_HYPERPARAMETER.format(name=name, rule=rule, value=value))
    return list(value)


# Hyper-parameters a run may set, with their checks; the model fields give the defaults.
HYPERPARAMETERS: dict[str, Callable] = {
    "learning_rate": _number("above 0", lambda v: v > 0),
    "epochs": _number("above 0", lambda v: v > 0),
    "max_steps": _number("a whole number, 0 or more", lambda v: v >= 0, int),
    "batch_size": _number("a whole number, 1 or more", lambda v: v >= 1, int),
    "gradient_accumulation": _number("a whole number, 1 or more", lambda v: v >= 1, int),
    "max_length": _number("a whole number, 16 or more", lambda v: v >= 16, int),
    "warmup_ratio": _number("from 0 up to (not including) 1", lambda v: 0 <= v < 1),
    "weight_decay": _number("0 or more", lambda v: v >= 0),
    "seed": _number("a whole number", lambda v: True, int),
    "eval_fraction": _number("from 0 to 0.5", lambda v: 0 <= v <= 0.5),
    "lora_r": _number("a whole number, 1 or more", lambda v: v >= 1, int),
    "lora_alpha": _number("a whole number, 1 or more", lambda v: v >= 1, int),
    "lora_dropout": _number("from 0 up to (not including) 1", lambda v: 0 <= v < 1),
    "target_modules": _module_list,
    "gradient_checkpointing": _flag,
    "save_steps": _number("a whole number, 1 or more", lambda v: v >= 1, int),
    "save_total_limit": _number("a whole number, 1 or more", lambda v: v >= 1, int),
}


def _qlora_problem() -> str | None:
    """Why QLoRA cannot be queued from here (None when it can).

    The worker checks again for a CUDA GPU before it loads anything. Here only the package is
    required: a deployment that installs bitsandbytes is one that has GPU workers, while the web
    host itself may well have no GPU.
    """
    import importlib.util

    from .engine.train import QLORA_UNAVAILABLE

    if importlib.util.find_spec("bitsandbytes") is None:
        return QLORA_UNAVAILABLE.format(missing="no bitsandbytes")
    return None


def finetune_run_create(
    *,
    base_model: LanguageModel,
    datasets: Sequence[tuple[InstructionDataset, int | None]],
    method: str = FineTuneRun.Method.LORA,
    params: dict | None = None,
    model_name: str = "",
    user=None,
    enqueue: bool = True,
) -> FineTuneRun:
    """Record a queued fine-tune run on a mix of data sets and enqueue it once committed.

    ``datasets`` pairs each data set with the number of rows to sample from it (None: all).
    Unset hyper-parameters take the model fields' defaults; the learning rate defaults to
    ``FULL_LEARNING_RATE`` for full fine-tuning.
    """
    from .engine.train import held_out_count, steps_for

    if method not in FineTuneRun.Method.values:
        raise ServiceError(UNKNOWN_METHOD.format(method=method))
    if method == FineTuneRun.Method.QLORA and (problem := _qlora_problem()):
        raise ServiceError(problem)
    if base_model.adapter_path:
        raise ServiceError(BASE_IS_ADAPTER.format(name=base_model.name))
    if model_name and LanguageModel.objects.filter(name=model_name).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=model_name))
    params = dict(params or {})
    unknown = sorted(set(params) - set(HYPERPARAMETERS))
    if unknown:
        raise ServiceError(UNKNOWN_HYPERPARAMETERS.format(keys=", ".join(unknown)))
    values = {key: HYPERPARAMETERS[key](key, value) for key, value in params.items()}
    if method == FineTuneRun.Method.FULL:
        values.setdefault("learning_rate", FULL_LEARNING_RATE)
    if not datasets:
        raise ServiceError(NO_DATASETS)
    total_rows = 0
    seen = set()
    for dataset, rows in datasets:
        if dataset.pk in seen:
            raise ServiceError(DATASET_TWICE.format(name=dataset.name))
        seen.add(dataset.pk)
        count = dataset.examples.count()
        if count == 0:
            raise ServiceError(EMPTY_DATASET.format(name=dataset.name))
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ServiceError(BAD_ROWS.format(name=dataset.name))
        if rows is not None and rows > count:
            raise ServiceError(TOO_MANY_ROWS.format(name=dataset.name, count=count, rows=rows))
        total_rows += count if rows is None else rows
    with transaction.atomic():
        run = FineTuneRun.objects.create(
            base_model=base_model,
            method=method,
            model_name=model_name,
            created_by=user if getattr(user, "pk", None) else None,
            **values,
        )
        # An estimate shown until the worker knows (examples longer than max_length drop out).
        held_out = held_out_count(total_rows, run.eval_fraction)
        run.total_steps = steps_for(total_rows - held_out, finetune_run_config(run))
        # The random part keeps a reused id (a restored database) off an old run's checkpoints.
        run.output_path = f"finetune/run-{run.pk}-{secrets.token_hex(4)}"
        run.save(update_fields=["total_steps", "output_path"])
        FineTuneRunDataset.objects.bulk_create(
            FineTuneRunDataset(run=run, dataset=dataset, rows=rows) for dataset, rows in datasets
        )
        if enqueue:
            _enqueue_finetune_on_commit(run.pk)
    return run


def _enqueue_finetune_on_commit(run_id: int) -> None:
    from .tasks import finetune_run_execute_task

    transaction.on_commit(lambda: finetune_run_execute_task.delay(run_id))


def finetune_run_config(run: FineTuneRun):
    """The engine's TrainConfig for a run's stored hyper-parameters."""
    from .engine.train import TrainConfig

    return TrainConfig(
        method=run.method,
        learning_rate=run.learning_rate,
        epochs=run.epochs,
        max_steps=run.max_steps,
        batch_size=run.batch_size,
        gradient_accumulation=run.gradient_accumulation,
        max_length=run.max_length,
        warmup_ratio=run.warmup_ratio,
        weight_decay=run.weight_decay,
        seed=run.seed,
        eval_fraction=run.eval_fraction,
        lora_r=run.lora_r,
        lora_alpha=run.lora_alpha,
        lora_dropout=run.lora_dropout,
        target_modules=list(run.target_modules) or None,
        save_steps=run.save_steps,
        save_total_limit=run.save_total_limit,
        gradient_checkpointing=run.gradient_checkpointing,
    )


def finetune_run_examples(run: FineTuneRun) -> list:
    """The run's training mix: each data set's rows (in position order), or ``rows`` of them
    sampled with the run's seed. The same run always gets the same examples in the same order,
    which is what lets a resumed run continue from its checkpoint's place in the data."""
    from .engine.train import Example

    rng = random.Random(run.seed)
    examples = []
    for source in run.sources.select_related("dataset").order_by("id"):
        rows = list(
            source.dataset.examples.order_by("position").values_list(
                "instruction", "input", "output"
            )
        )
        if source.rows is not None and source.rows < len(rows):
            rows = rng.sample(rows, source.rows)
        examples.extend(Example(instruction=i, input=x, output=o) for i, x, o in rows)
    return examples


def finetune_run_cancel(*, run: FineTuneRun) -> FineTuneRun:
    """Queued runs stop at once; a running one stops after its current step, with a checkpoint."""
    updated = FineTuneRun.objects.filter(pk=run.pk, status__in=FineTuneRun.ACTIVE).update(
        status=FineTuneRun.Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    if not updated:
        raise ServiceError(CANNOT_CANCEL_FINETUNE.format(id=run.pk, status=run.status))
    return run


def finetune_run_resume(*, run: FineTuneRun, enqueue: bool = True) -> FineTuneRun:
    """Queue a failed or cancelled run again; it continues from its last checkpoint.

    Without ``enqueue`` the run is only marked queued, for a caller that trains it itself
    (``manage.py finetune --run ID --inline``, e.g. under ``accelerate launch``).
    """
    with transaction.atomic():
        updated = FineTuneRun.objects.filter(
            pk=run.pk, status__in=[FineTuneRun.Status.FAILED, FineTuneRun.Status.CANCELLED]
        ).update(status=FineTuneRun.Status.QUEUED, error="", finished_at=None, worker="")
        if updated and enqueue:
            _enqueue_finetune_on_commit(run.pk)
    run.refresh_from_db()
    if not updated:
        raise ServiceError(CANNOT_RESUME.format(id=run.pk, status=run.status))
    return run


def finetune_runs_requeue_stale() -> list[int]:
    """Requeue running fine-tunes whose heartbeat stopped; they resume from their checkpoint."""
    requeued = _requeue_stale(FineTuneRun, _enqueue_finetune_on_commit)
    if requeued:
        log.warning("requeued fine-tune runs with a stale heartbeat: %s", requeued)
    return requeued


def _distributed() -> tuple[int, int]:
    """(rank, world size) under ``accelerate launch`` / torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


ProgressFn = Callable[[int, int, float | None], None]


def finetune_run_execute(
    *, run_id: int, on_progress: ProgressFn | None = None
) -> FineTuneRun | None:
    """Claim a fine-tune run and train it, from its last checkpoint if it has one.

    Returns None if it was not claimable. Safe to call any number of times for the same run
    (redelivered or requeued tasks). ``on_progress(step, total_steps, loss)`` is called after
    each step (the ``finetune --inline`` progress bar).

    Under ``accelerate launch`` every process calls this; the main one claims the run and
    writes to the database, the others only train.
    """
    _drop_stale_connection()
    rank, world = _distributed()
    if world > 1 and rank != 0:
        _finetune_follow(run_id)
        return None
    worker = worker_name()
    if not _claim(run_id, worker, model=FineTuneRun):
        log.info("fine-tune %s is not claimable (finished, cancelled or held elsewhere)", run_id)
        return None
    heartbeat = _Heartbeat(run_id, worker, settings.RUN_HEARTBEAT_INTERVAL, model=FineTuneRun)
    heartbeat.start()
    try:
        _finetune(run_id, worker, on_progress)
    except Exception:
        log.exception("fine-tune run %s failed", run_id)
        FineTuneRun.objects.filter(
            pk=run_id, worker=worker, status=FineTuneRun.Status.RUNNING
        ).update(
            status=FineTuneRun.Status.FAILED,
            error=traceback.format_exc(limit=8)[-4000:],
            finished_at=timezone.now(),
        )
    finally:
        heartbeat.stop()
    return FineTuneRun.objects.get(pk=run_id)


def _finetune_inputs(run: FineTuneRun) -> dict:
    """What engine.train needs for a run, but the callbacks."""
    from .engine.loading import load_tokenizer, resolve_path
    from .engine.train import qlora_unavailable

    if run.method == FineTuneRun.Method.QLORA and (problem := qlora_unavailable()):
        raise ServiceError(problem)
    base = run.base_model
    model_path = resolve_path(base.name_or_path, settings.MODEL_STORAGE)
    root = Path(settings.MODEL_STORAGE) / run.output_path
    return {
        "model_path": model_path,
        "tokenizer": load_tokenizer(
            model_path, revision=base.revision or None, trust_remote_code=base.trust_remote_code
        ),
        "examples": finetune_run_examples(run),
        "fmt": base.prompt_format,
        "config": finetune_run_config(run),
        "checkpoint_dir": root / "checkpoints",
        "output_dir": root / ("adapter" if run.is_lora else "model"),
        "revision": base.revision or None,
        "trust_remote_code": base.trust_remote_code,
    }


def _finetune(run_id: int, worker: str, on_progress: ProgressFn | None) -> None:
    from .engine.train import train

    run = FineTuneRun.objects.select_related("base_model").get(pk=run_id)
    mine = FineTuneRun.objects.filter(pk=run_id, worker=worker)

    def on_begin(start) -> None:
        with transaction.atomic():
            # Steps after the checkpoint are trained again; their old entries go.
            FineTuneLog.objects.filter(run_id=run_id, step__gt=start.start_step).delete()
            run.total_steps = start.max_steps
            if not run.target_modules and start.target_modules:
                # Record what "chosen per architecture" chose.
                mine.update(target_modules=list(start.target_modules))
            mine.update(
                total_steps=start.max_steps,
                step=start.start_step,
                resumed_from_step=start.start_step,
                train_examples=start.train_examples,
                eval_examples=start.eval_examples,
                skipped_examples=start.skipped_examples,
            )

    def on_log(entries) -> None:
        FineTuneLog.objects.bulk_create(
            [
                FineTuneLog(
                    run_id=run_id,
                    kind=e.kind,
                    step=e.step,
                    loss=e.loss,
                    learning_rate=e.learning_rate,
                    epoch=e.epoch,
                )
                for e in entries
            ],
            update_conflicts=True,
            unique_fields=["run", "kind", "step"],
            update_fields=["loss", "learning_rate", "epoch"],
        )
        trained = [e for e in entries if e.kind == FineTuneLog.Kind.TRAIN]
        if trained:
            last = trained[-1]
            mine.update(step=last.step, epoch=last.epoch or 0, heartbeat_at=timezone.now())
            if on_progress is not None:
                on_progress(last.step, run.total_steps, last.loss)

    def should_stop() -> bool:
        return not mine.filter(status=FineTuneRun.Status.RUNNING).exists()

    def on_save(path: str, step: int) -> None:
        mine.update(checkpoint=storage_relative(path))

    result = train(
        **_finetune_inputs(run),
        on_begin=on_begin,
        on_log=on_log,
        should_stop=should_stop,
        on_save=on_save,
    )
    mine.update(step=result.global_step, train_tokens=result.total_tokens)
    if result.stopped:
        return  # cancelled (or taken over): the status was already set by whoever stopped it
    _finetune_register(run, result.output_dir, worker)


def _finetune_follow(run_id: int) -> None:
    """A non-main process of a multi-GPU run: wait for the main one to claim, then train."""
    from .engine.train import train

    deadline = time.monotonic() + 300
    while not FineTuneRun.objects.filter(pk=run_id, status=FineTuneRun.Status.RUNNING).exists():
        if time.monotonic() > deadline:
            raise ServiceError(f"fine-tune run {run_id} was not started by the main process")
        time.sleep(1)
    run = FineTuneRun.objects.select_related("base_model").get(pk=run_id)
    train(**_finetune_inputs(run))


def _finetune_register(run: FineTuneRun, output_dir: str, worker: str) -> None:
    """Register the tuned model with the base model's prompt format and mark the run done."""
    base = run.base_model
    name = run.model_name or f"{base.name}-{run.method}-ft{run.pk}"
    relative = storage_relative(output_dir)
    with transaction.atomic():
        held = (
            FineTuneRun.objects.select_for_update()
            .filter(pk=run.pk, worker=worker, status=FineTuneRun.Status.RUNNING)
            .first()
        )
        if held is None:
            return  # cancelled in the last moment: the saved output stays, unregistered
        if LanguageModel.objects.filter(name=name).exists():
            name = f"{name}-ft{run.pk}"
        model = language_model_register(
            name=name,
            # An adapter loads on its base's weights (language_model_load); a fully tuned
            # model is a standalone directory.
            name_or_path=base.name_or_path if run.is_lora else relative,
            revision=base.revision if run.is_lora else "",
            prompt_format=base.prompt_format,
            maker=base.maker,
            generation_defaults=base.generation_defaults,
            trust_remote_code=base.trust_remote_code,
            base_model=base if run.is_lora else None,
            adapter_path=relative if run.is_lora else "",
        )
        FineTuneRun.objects.filter(pk=run.pk).update(
            status=FineTuneRun.Status.SUCCEEDED,
            result_model=model,
            finished_at=timezone.now(),
        )


# --- merging adapters --------------------------------------------------------------------------


def language_model_merge_request(*, model: LanguageModel, name: str = "") -> str:
    """Check a merge can be done and queue it on the ``gpu`` queue; returns the new model's name."""
    if not model.adapter_path or model.base_model is None:
        raise ServiceError(MERGE_NEEDS_ADAPTER.format(name=model.name))
    name = name or f"{model.name}-merged"
    if LanguageModel.objects.filter(name=name).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=name))
    from .tasks import language_model_merge_task

    # Merging loads the whole base model: GPU-worker work, never the web process.
    transaction.on_commit(
        lambda: language_model_merge_task.apply_async((model.pk, name), queue="gpu")
    )
    return name


def language_model_merge(*, model: LanguageModel, name: str) -> LanguageModel:
    """Fold an adapter into its base (peft merge_and_unload) and register the standalone model."""
    from .engine.loading import resolve_path
    from .engine.train import merge_adapter

    if not model.adapter_path or model.base_model is None:
        raise ServiceError(MERGE_NEEDS_ADAPTER.format(name=model.name))
    if LanguageModel.objects.filter(name=name).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=name))
    base = model.base_model
    out = Path(settings.MODEL_STORAGE) / "merged" / f"model-{model.pk}-{_path_safe(name)}"
    if out.exists():
        shutil.rmtree(out)  # what an earlier, interrupted attempt left
    merge_adapter(
        resolve_path(base.name_or_path, settings.MODEL_STORAGE),
        resolve_path(model.adapter_path, settings.MODEL_STORAGE),
        out,
        tokenizer=language_model_tokenizer(model=model),
        revision=base.revision or None,
        trust_remote_code=base.trust_remote_code,
    )
    return language_model_register(
        name=name,
        name_or_path=storage_relative(out),
        prompt_format=model.prompt_format,
        maker=model.maker,
        generation_defaults=model.generation_defaults,
        trust_remote_code=base.trust_remote_code,
    )


def _path_safe(name: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return safe.strip("._")[:80] or "model"
