"""Generation runs: a model answers every question of a prompt set.

A run commits its answers batch by batch, so a run whose worker died resumes with the answers it
is missing (generation/lifecycle.py claims, heartbeats and requeues it).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from evalsite.accounts.services import Action, audit_record

from . import lifecycle
from .errors import ServiceError
from .models import Answer, GenerationRun, LanguageModel, PromptSet
from .params import context_check, generation_params_check
from .registry import language_model_load, model_context

EMPTY_PROMPT_SET = "prompt set {name!r} has no questions"
CANNOT_CANCEL = "run {id} is {status}; only queued or running runs can be cancelled"
CANNOT_RETRY = "run {id} is {status}; only failed or cancelled runs can be retried"
IMPORTED_RUN = "run {id} holds imported answers; there is nothing to generate"

# Called with the id of a run that succeeded, while its worker still holds it (an exception fails
# the run). Work built on generation runs registers here, so this module need not know it.
_ON_SUCCESS: list[Callable[[int], object]] = []


def on_run_succeeded(hook: Callable[[int], object]) -> Callable[[int], object]:
    """Register ``hook(run_id)`` to finish what a generation run was started for."""
    _ON_SUCCESS.append(hook)
    return hook


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
    params = generation_params_check(params or {})
    snapshot = generation_params_check({**model.generation_defaults, **params})
    weights = model.base_model if model.adapter_path and model.base_model else model
    context_check(snapshot, model_context(weights.name_or_path))
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
        audit_record(
            user=user,
            action=Action.GENERATION_RUN_START,
            obj=run,
            model=model.name,
            prompt_set=prompt_set.name,
            questions=total,
            params=snapshot,
            seed=seed,
        )
        if enqueue:
            _enqueue_on_commit(run.pk)
    return run


def _enqueue_on_commit(run_id: int) -> None:
    from .tasks import generation_run_execute_task

    lifecycle.enqueue_on_commit(generation_run_execute_task, run_id)


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


@transaction.atomic
def generation_run_cancel(*, run: GenerationRun, user=None) -> GenerationRun:
    """Queued runs stop at once; a running worker stops before its next batch."""
    run = lifecycle.cancel(run, CANNOT_CANCEL)
    audit_record(user=user, action=Action.GENERATION_RUN_CANCEL, obj=run, done=run.done)
    return run


@transaction.atomic
def generation_run_retry(*, run: GenerationRun, user=None) -> GenerationRun:
    """Put a failed or cancelled run back in the queue; it generates only missing answers."""
    if run.imported:
        raise ServiceError(IMPORTED_RUN.format(id=run.pk))
    run = lifecycle.requeue(run, CANNOT_RETRY, _enqueue_on_commit)
    audit_record(
        user=user, action=Action.GENERATION_RUN_RETRY, obj=run, done=run.done, total=run.total
    )
    return run


def generation_runs_requeue_stale() -> list[int]:
    """Requeue running runs whose heartbeat stopped (their worker died); returns their ids."""
    return lifecycle.requeue_stale(GenerationRun, _enqueue_on_commit, label="generation run")


def generation_run_execute(*, run_id: int) -> GenerationRun | None:
    """Claim a run and generate the answers it is missing. Returns None if it was not claimable.

    Safe to call any number of times for the same run (redelivered or requeued tasks).
    """
    if not lifecycle.run_held(GenerationRun, run_id, _work, label="generation run", imported=False):
        return None
    return GenerationRun.objects.get(pk=run_id)


def _work(run_id: int, worker: str) -> None:
    _generate_missing(run_id, worker)
    if GenerationRun.objects.filter(pk=run_id, status=GenerationRun.Status.SUCCEEDED).exists():
        for hook in _ON_SUCCESS:
            hook(run_id)


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
