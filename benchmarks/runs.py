"""Benchmark runs: a model over lm-eval tasks, queued, resumable, cancellable.

The row is written first and its id enqueued once committed: a model with weights goes to the
`gpu` queue, a served model (lm-eval only sends it requests) to `default`. Claim, heartbeat,
cancel, retry and stale requeue are the spine's (evalsite/runs); benchmarks/execution.py is what
a claimed run does (each task it has no results for, one transaction per task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from evalsite.accounts.services import Action
from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs import shards as run_shards
from evalsite.runs.kinds import DEFAULT, GPU, RunKind, lazy
from generation.engine.params import Param
from generation.models import LanguageModel
from generation.params import params_check
from generation.runs import model_runnable
from generation.templates import template_for

from .catalog import available_tasks, shown_path, task_dirs
from .engine import harness
from .engine.catalogue import expand
from .models import BenchmarkRun, PromptMode, Scoring

BAD_SCORING = "scoring must be one of: {choices} (got {value!r})"
BAD_FEWSHOT = "num_fewshot must be between 0 and 32 (got {value})"
BAD_LIMIT = "limit must be at least 1 example per task, or empty for all (got {value})"
BAD_BATCH_SIZE = "batch_size must be at least 1 (got {value})"
BAD_PARAMS = "params takes only {allowed} (got {keys})"
CANNOT_RUN = "benchmark run on {name!r} cannot be made: {problems}"
BAD_PROMPT = "prompt must be one of: {choices} (got {value!r})"
LONG_SYSTEM = "system_instruction is at most {limit} characters (got {length})"
SYSTEM_LIMIT = 4000
LEFT_OUT = "task files left out because they cannot be read (see the catalogue): {files}"


@dataclass(frozen=True)
class _StopStrings(Param):
    @property
    def rule(self) -> str:
        return "a list of non-empty strings"


# Decoding a run may set for generative scoring (lm-eval's gen_kwargs), typed and bounded as a
# generation run's are (generation/params.py): the worker is handed only values it can use.
GEN_PARAMS = (
    Param("max_gen_toks", int, low=1, high=8192),
    Param("do_sample", bool),
    Param("temperature", float, low=0, high=2),
    Param("top_p", float, low=0, high=1),
    _StopStrings("until", list),
)
GEN_KEYS = tuple(p.name for p in GEN_PARAMS)


def _params_check(params: dict | None) -> dict:
    unknown = BAD_PARAMS.format(allowed=", ".join(GEN_KEYS), keys="{keys}")
    return params_check(dict(params or {}), GEN_PARAMS, unknown=unknown)


def benchmark_run_create(
    *,
    model: LanguageModel,
    tasks: Sequence[str],
    num_fewshot: int = 0,
    scoring: str = Scoring.LOGLIKELIHOOD,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    params: dict | None = None,
    prompt: str = PromptMode.TEMPLATE,
    system_instruction: str = "",
    fewshot_as_multiturn: bool = True,
    user=None,
    enqueue: bool = True,
    shards: int | None = None,
) -> BenchmarkRun:
    """Record a queued benchmark run and enqueue it once committed.

    ``tasks``: task or group names of the catalogue (benchmarks/catalog.py); groups expand to
    their tasks, which the run stores. ``scoring`` applies to multiple-choice tasks; generative
    tasks are always scored generatively (each result records how it was made). ``shards``:
    split the tasks into that many ranges that workers score at once (None: one per worker
    consuming the run's queue; evalsite/runs/shards.py).

    ``prompt``: ``template`` renders each example's conversation (``system_instruction`` in
    place of the template's system prompt when given; few-shot examples as earlier turns when
    ``fewshot_as_multiturn``) with the model's template, as generation does; ``raw`` gives a
    model with weights the task's own text. A served model is always sent messages.
    """
    model_runnable(model)
    if scoring not in Scoring.values:
        raise ServiceError(BAD_SCORING.format(choices=", ".join(Scoring.values), value=scoring))
    if prompt not in PromptMode.values:
        raise ServiceError(BAD_PROMPT.format(choices=", ".join(PromptMode.values), value=prompt))
    if prompt == PromptMode.RAW and model.is_endpoint:
        raise ServiceError(CANNOT_RUN.format(name=model.name, problems=harness.SERVED_RAW))
    if len(system_instruction or "") > SYSTEM_LIMIT:
        raise ServiceError(LONG_SYSTEM.format(limit=SYSTEM_LIMIT, length=len(system_instruction)))
    if prompt == PromptMode.TEMPLATE or model.is_endpoint:
        template_for(model)  # a model naming no existing template is refused here, not later
    if not 0 <= num_fewshot <= 32:
        raise ServiceError(BAD_FEWSHOT.format(value=num_fewshot))
    if limit is not None and limit < 1:
        raise ServiceError(BAD_LIMIT.format(value=limit))
    if batch_size < 1:
        raise ServiceError(BAD_BATCH_SIZE.format(value=batch_size))
    params = _params_check(params)
    known = available_tasks()
    try:
        names = expand(list(tasks), known)
    except ValueError as exc:
        left_out = ", ".join(shown_path(bad.path) for bad in known.broken)
        message = f"{exc}; {LEFT_OUT.format(files=left_out)}" if left_out else str(exc)
        raise ServiceError(message) from None
    kinds = {name: known.tasks[name].output_type for name in names}
    problems = harness.scoring_problems(kinds, scoring, served=model.is_endpoint)
    if problems:
        raise ServiceError(CANNOT_RUN.format(name=model.name, problems="; ".join(problems)))
    # What the run is asked to do: stored on the row and in the audit entry alike.
    asked = {
        "tasks": names,
        "num_fewshot": num_fewshot,
        "scoring": scoring,
        "limit": limit,
        "seed": seed,
        "params": params,
        "prompt": prompt,
        "system_instruction": system_instruction or "",
        "fewshot_as_multiturn": fewshot_as_multiturn,
    }
    with transaction.atomic():
        run = BenchmarkRun.objects.create(
            model=model,
            batch_size=batch_size,
            total=len(names),
            task_source=", ".join(shown_path(d) for d in task_dirs())[:500],
            created_by=user if getattr(user, "pk", None) else None,
            **asked,
        )
        run_shards.start(
            run,
            shards,
            enqueue=enqueue,
            user=user,
            action=Action.BENCHMARK_RUN_START,
            model=model.name,
            **asked,
        )
    return run


def benchmark_run_execute(run_id: int) -> BenchmarkRun | None:
    """Claim the run and score the tasks it is missing (None if it was not claimable). Safe to
    call any number of times for one run."""
    return lifecycle.execute(BENCHMARK_RUN, run_id)


BENCHMARK_RUN = kinds.register(
    RunKind(
        model=BenchmarkRun,
        label="benchmark run",
        work=lazy("benchmarks.execution.score_missing"),
        # Served models only receive requests: no GPU needed.
        queue=lambda run: DEFAULT if run.model.is_endpoint else GPU,
        unit="tasks",
        # Shards are ranges of the run's tasks, in run order.
        items=lambda run: len(run.tasks),
        work_shard=lazy("benchmarks.execution.score_shard"),
        cancel_action=Action.BENCHMARK_RUN_CANCEL,
        retry_action=Action.BENCHMARK_RUN_RETRY,
        name="benchmark",
        related=("model",),
        provenance=("model", "tasks", "num_fewshot", "scoring", "limit", "seed", "params"),
    )
)
