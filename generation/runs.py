"""Generation runs: a model answers every question of a prompt set.

A run commits its answers batch by batch (answer by answer for a served model), so a run whose
worker died resumes with the answers it is missing. It is a kind on the spine
(evalsite/runs: claim, heartbeat, requeue, cancel, retry); generation/answering.py is what the
claimed run does. A run of weights goes to the `gpu` queue; a run of a served model only sends
requests, and goes to the `default` queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evalsite.accounts.services import Action
from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs import shards as run_shards
from evalsite.runs.kinds import DEFAULT, GPU, RunKind, lazy

from .models import Answer, GenerationRun, LanguageModel, PromptSet, PromptTemplate
from .params import context_check, generation_params_check
from .registry import model_context
from .templates import template_for

EMPTY_PROMPT_SET = "prompt set {name!r} has no questions"
ENDPOINT_PARAMS = "model {name!r} is served by an endpoint: {problem}"
NOT_RUNNABLE = "model {name!r} has neither weights nor an endpoint; register it first"


def model_runnable(model: LanguageModel, message: str = NOT_RUNNABLE) -> None:
    """Refuse a model a run cannot use: one with neither weights nor an endpoint."""
    if model.pk is None or not (model.is_endpoint or model.name_or_path or model.adapter_path):
        raise ServiceError(message.format(name=model.name))


def decoding_snapshot(model: LanguageModel, params: dict, seed: int) -> dict:
    """The checked decoding a run of ``model`` records: generation parameters in their declared
    set and bounds, that fit the weights' context, or that a served model's requests can carry
    (ServiceError naming what is wrong). Every kind that generates (answers, verdicts,
    rewrites) checks its parameters here."""
    snapshot = generation_params_check(params)
    if model.is_endpoint:
        from .engine.endpoint import request_options

        try:
            request_options(snapshot, seed)
        except ValueError as exc:
            raise ServiceError(ENDPOINT_PARAMS.format(name=model.name, problem=exc)) from None
    else:
        weights = model.base_model if model.adapter_path and model.base_model else model
        context_check(snapshot, model_context(weights.name_or_path))
    return snapshot


def engine_checked(engine: str) -> str:
    """A run's ``engine`` option (auto, transformers or vllm), refused (ServiceError) when it
    asks for vLLM on a deployment that has not installed it, or is unknown."""
    from .engine.vllm_engine import engine_problem

    if problem := engine_problem(engine):
        raise ServiceError(problem)
    return engine


def engine_chosen(run) -> str:
    """On the worker: the engine a run of local weights uses (the run's option, else the
    worker's GENERATION_ENGINE; auto resolved here), recorded on the run's row."""
    from .engine.vllm_engine import AUTO, engine_for

    requested = run.engine_requested
    if requested == AUTO:
        requested = settings.GENERATION_ENGINE
    used = engine_for(requested)
    type(run).objects.filter(pk=run.pk).update(engine=used)
    run.engine = used
    return used


def engine_served(run) -> None:
    """Record that a served model's endpoint generated (engine options do not apply)."""
    from .engine.vllm_engine import ENDPOINT

    type(run).objects.filter(pk=run.pk).update(engine=ENDPOINT)
    run.engine = ENDPOINT


def on_run_succeeded(hook: Callable[[int], object]) -> Callable[[int], object]:
    """Register ``hook(run_id)`` to finish what a generation run was started for (called while
    its worker still holds the run; an exception fails it)."""
    return kinds.on_succeeded(GenerationRun, hook)


def generation_run_create(
    *,
    model: LanguageModel,
    prompt_set: PromptSet,
    params: dict | None = None,
    seed: int = 0,
    batch_size: int = 8,
    user=None,
    enqueue: bool = True,
    template: PromptTemplate | None = None,
    engine: str = "auto",
    shards: int | None = None,
) -> GenerationRun:
    """Record a queued run (with its parameter snapshot and the template version it renders
    with: ``template``, or the latest version of the model's) and enqueue it once committed.

    ``total`` counts answers: one per question and user turn. ``engine`` (local weights):
    auto, transformers or vllm (``engine_checked``). ``shards``: split the questions
    into that many ranges that workers answer at once (None: one per worker consuming the
    run's queue; evalsite/runs/shards.py).
    """
    engine = engine_checked(engine)
    turns = [1 + len(f or []) for f in prompt_set.questions.values_list("follow_ups", flat=True)]
    total = sum(turns)
    if total == 0:
        raise ServiceError(EMPTY_PROMPT_SET.format(name=prompt_set.name))
    params = generation_params_check(params or {})
    snapshot = decoding_snapshot(model, {**model.generation_defaults, **params}, seed)
    template = template or template_for(model)
    with transaction.atomic():
        run = GenerationRun.objects.create(
            model=model,
            prompt_set=prompt_set,
            params=snapshot,
            seed=seed,
            batch_size=batch_size,
            total=total,
            template=template,
            engine_requested=engine,
            created_by=user if getattr(user, "pk", None) else None,
        )
        run_shards.start(
            run,
            shards,
            enqueue=enqueue,
            user=user,
            action=Action.GENERATION_RUN_START,
            model=model.name,
            prompt_set=prompt_set.name,
            questions=total,
            params=snapshot,
            seed=seed,
        )
    return run


@transaction.atomic
def generation_run_create_imported(
    *, model: LanguageModel, prompt_set: PromptSet, answers: dict[int, str | Sequence[str]]
) -> GenerationRun:
    """A succeeded run holding answers that came from elsewhere, keyed by question id: one
    text, or the replies to each user turn in order (one Answer per turn)."""
    rows = [
        Answer(question_id=qid, turn=turn, text=text)
        for qid, texts in answers.items()
        for turn, text in enumerate([texts] if isinstance(texts, str) else texts, start=1)
    ]
    now = timezone.now()
    run = GenerationRun.objects.create(
        model=model,
        prompt_set=prompt_set,
        imported=True,
        status=GenerationRun.Status.SUCCEEDED,
        total=len(rows),
        done=len(rows),
        started_at=now,
        finished_at=now,
    )
    for row in rows:
        row.run = run
    Answer.objects.bulk_create(rows, batch_size=1000)
    return run


def generation_run_cancel(*, run: GenerationRun, user=None) -> GenerationRun:
    """Queued runs stop at once; a running worker stops before its next batch."""
    return lifecycle.cancel(run, user)


def generation_run_retry(*, run: GenerationRun, user=None) -> GenerationRun:
    """Put a failed or cancelled run back in the queue; it generates only missing answers."""
    return lifecycle.retry(run, user)


def generation_run_execute(*, run_id: int) -> GenerationRun | None:
    """Claim a run and generate the answers it is missing. Returns None if it was not claimable.

    Safe to call any number of times for the same run (redelivered or requeued tasks).
    """
    return lifecycle.execute(GENERATION_RUN, run_id)


GENERATION_RUN = kinds.register(
    RunKind(
        model=GenerationRun,
        label="generation run",
        work=lazy("generation.answering.generate_missing"),
        # A served model only receives requests: no GPU needed.
        queue=lambda run: DEFAULT if run.model.is_endpoint else GPU,
        # Imported runs hold answers from elsewhere: nothing to generate.
        claimable={"imported": False},
        unit="answers",
        # Shards are ranges of questions (by position), each with all its turns.
        items=lazy("generation.answering.run_questions"),
        work_shard=lazy("generation.answering.generate_shard"),
        cancel_action=Action.GENERATION_RUN_CANCEL,
        retry_action=Action.GENERATION_RUN_RETRY,
        name="generation",
        related=("model", "prompt_set"),
        provenance=(
            "model",
            "prompt_set",
            "params",
            "seed",
            "template",
            "imported",
            "engine_requested",
        ),
    )
)
