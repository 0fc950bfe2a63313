"""Evolution runs: create (the row first, its id enqueued once committed), cancel, retry, stale
requeue, execute. A run whose models all are served goes to the `default` queue; any model with
weights sends it to `gpu`. It is a kind on the spine (evalsite/runs: claim, heartbeat,
requeue); evolution/evolve.py is what a claimed run does."""

from __future__ import annotations

from django.db import transaction

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs.kinds import DEFAULT, GPU, RunKind, lazy
from generation.models import InstructionDataset, LanguageModel
from generation.runs import decoding_snapshot, model_runnable

from .engine import elimination
from .models import EvolutionRun
from .prompts import evolution_prompts_current

EMPTY_SOURCE = "data set {name!r} has no rows to evolve"
BAD_ROUNDS = "rounds must be between 1 and {most} (got {value})"
BAD_BATCH_SIZE = "batch_size must be at least 1 (got {value})"
NAME_TAKEN = "an instruction data set named {name!r} already exists"
BAD_SETTINGS = "{what}: {problem}"
MOST_ROUNDS = 10

# The evolver writes one instruction: sampled (so rounds and siblings differ), short.
EVOLVE_DEFAULTS = {"do_sample": True, "temperature": 0.7, "max_new_tokens": 128}
ANSWER_DEFAULTS: dict = {}


def evolution_run_create(
    *,
    source: InstructionDataset,
    model: LanguageModel,
    answer_model: LanguageModel | None = None,
    judge: LanguageModel | None = None,
    rounds: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    params: dict | None = None,
    answer_params: dict | None = None,
    rules: dict | None = None,
    name: str = "",
    user=None,
    enqueue: bool = True,
) -> EvolutionRun:
    """Record a queued evolution run and enqueue it once committed.

    ``answer_model`` None: the evolver answers too. ``params``: the evolver's decoding over
    ``EVOLVE_DEFAULTS``; ``answer_params``: the answer model's over its own defaults; ``rules``:
    elimination thresholds (engine/elimination.DEFAULTS). ``name``: the data set to write
    (blank: ``<source>-evol-<run id>``).
    """
    answer_model = answer_model or model
    for m in (model, answer_model, *([judge] if judge else [])):
        model_runnable(m)
    if not 1 <= rounds <= MOST_ROUNDS:
        raise ServiceError(BAD_ROUNDS.format(most=MOST_ROUNDS, value=rounds))
    if batch_size < 1:
        raise ServiceError(BAD_BATCH_SIZE.format(value=batch_size))
    rows = source.examples.count()
    if rows == 0:
        raise ServiceError(EMPTY_SOURCE.format(name=source.name))
    name = name.strip()
    if name and InstructionDataset.objects.filter(name=name).exists():
        raise ServiceError(NAME_TAKEN.format(name=name))
    try:
        thresholds = elimination.rules_check(rules)
    except ValueError as exc:
        raise ServiceError(BAD_SETTINGS.format(what="rules", problem=exc)) from None
    evolve_params = decoding_snapshot(model, {**EVOLVE_DEFAULTS, **(params or {})}, seed)
    answering = decoding_snapshot(answer_model, {**ANSWER_DEFAULTS, **(answer_params or {})}, seed)
    prompts = evolution_prompts_current()
    with transaction.atomic():
        run = EvolutionRun.objects.create(
            source=source,
            model=model,
            answer_model=answer_model,
            judge=judge,
            rounds=rounds,
            seed=seed,
            batch_size=batch_size,
            params=evolve_params,
            answer_params=answering,
            rules=thresholds,
            prompts={op: p.pk for op, p in prompts.items()},
            name=name or "-",
            total=rows * rounds,
            created_by=user if getattr(user, "pk", None) else None,
        )
        if not name:
            run.name = f"{source.name}-evol-{run.pk}"
            run.save(update_fields=["name"])
        audit_record(
            user=user,
            action=Action.EVOLUTION_RUN_START,
            obj=run,
            source=source.name,
            model=model.name,
            answer_model=answer_model.name,
            judge=judge.name if judge else "",
            rounds=rounds,
            seed=seed,
            params=evolve_params,
            answer_params=answering,
            rules=thresholds,
            prompts={op: p.version for op, p in prompts.items()},
            name=run.name,
        )
        if enqueue:
            lifecycle.enqueue(run)
    return run


def evolution_run_cancel(*, run: EvolutionRun, user=None) -> EvolutionRun:
    """Queued runs stop at once; a running worker stops before its next batch."""
    return lifecycle.cancel(run, user)


def evolution_run_retry(*, run: EvolutionRun, user=None) -> EvolutionRun:
    """Queue a failed or cancelled run again; it makes only the items it is missing."""
    return lifecycle.retry(run, user)


def evolution_run_execute(run_id: int) -> EvolutionRun | None:
    """Claim the run and make what it is missing (None if it was not claimable). Safe to call
    any number of times for one run."""
    return lifecycle.execute(EVOLUTION_RUN, run_id)


EVOLUTION_RUN = kinds.register(
    RunKind(
        model=EvolutionRun,
        label="evolution run",
        work=lazy("evolution.evolve.evolve_missing"),
        # Served models only receive requests: no GPU needed.
        queue=lambda run: DEFAULT if run.served else GPU,
        unit="items",
        cancel_action=Action.EVOLUTION_RUN_CANCEL,
        retry_action=Action.EVOLUTION_RUN_RETRY,
        audit_fields=("done",),
        name="evolution",
        related=("model", "source"),
        provenance=(
            "source",
            "model",
            "answer_model",
            "judge",
            "rounds",
            "seed",
            "params",
            "answer_params",
            "rules",
            "prompts",
        ),
    )
)
