"""Writes for the generation app: prompt sets, models, generation runs.

Each service does one whole state change. Long work (generation) is claimed with one conditional
UPDATE, commits each batch of answers as it is made and keeps a heartbeat on the run row, so a
run whose worker died is requeued and resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import prompts
from .importers import ParsedQuestion, parse_prompt_file
from .models import Answer, GenerationRun, LanguageModel, PromptSet, Question

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
GENERATION_PARAMS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
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
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    stale = Q(status=GenerationRun.Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    requeued = []
    for run_id in GenerationRun.objects.filter(stale).values_list("pk", flat=True):
        with transaction.atomic():
            # Conditional UPDATE: another process may have requeued or finished it meanwhile.
            if GenerationRun.objects.filter(Q(pk=run_id) & stale).update(
                status=GenerationRun.Status.QUEUED, worker=""
            ):
                _enqueue_on_commit(run_id)
                requeued.append(run_id)
    if requeued:
        log.warning("requeued generation runs with a stale heartbeat: %s", requeued)
    return requeued


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim(run_id: int, worker: str) -> bool:
    """Take the run for this worker: one conditional UPDATE, so two workers never both run it."""
    cutoff = timezone.now() - settings.RUN_HEARTBEAT_TIMEOUT
    now = timezone.now()
    claimable = Q(status=GenerationRun.Status.QUEUED) | Q(
        status=GenerationRun.Status.RUNNING, heartbeat_at__lt=cutoff
    )
    claimed = GenerationRun.objects.filter(Q(pk=run_id) & claimable, imported=False).update(
        status=GenerationRun.Status.RUNNING,
        worker=worker,
        heartbeat_at=now,
        error="",
    )
    if claimed:
        GenerationRun.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
        GenerationRun.objects.filter(pk=run_id).update(attempts=F("attempts") + 1)
    return bool(claimed)


class _Heartbeat(threading.Thread):
    """Touches the run row every few seconds while this worker holds it."""

    def __init__(self, run_id: int, worker: str, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-run-{run_id}")
        self.run_id, self.worker, self.interval = run_id, worker, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                GenerationRun.objects.filter(
                    pk=self.run_id, status=GenerationRun.Status.RUNNING, worker=self.worker
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
    close_old_connections()
    worker = worker_name()
    if not _claim(run_id, worker):
        log.info("run %s is not claimable (finished, cancelled or held by a live worker)", run_id)
        return None
    heartbeat = _Heartbeat(run_id, worker, settings.RUN_HEARTBEAT_INTERVAL)
    heartbeat.start()
    try:
        _generate_missing(run_id, worker)
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
