"""What a claimed benchmark run does: score each task it has no results for, one at a time.

A task's results and samples are written in one transaction, together with the run's progress,
and only while this worker still holds the run: a run resumed after its worker died skips the
tasks already stored and never stores one twice (the unique constraints back this up).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from evalsite.errors import ServiceError
from generation.registry import language_model_endpoint, language_model_load
from generation.templates import as_template, template_for

from .catalog import task_dirs
from .engine import harness
from .engine.reading import TaskOutcome
from .models import BenchmarkResult, BenchmarkRun, BenchmarkSample

log = logging.getLogger(__name__)


def _held(run_id: int, worker: str):
    return BenchmarkRun.objects.filter(pk=run_id, status=BenchmarkRun.Status.RUNNING, worker=worker)


def _fail(run_id: int, worker: str, message: str) -> None:
    _held(run_id, worker).update(
        status=BenchmarkRun.Status.FAILED, error=message, finished_at=timezone.now()
    )


def stored_tasks(run: BenchmarkRun) -> set[str]:
    return set(run.results.values_list("task", flat=True).distinct())


def _harness(run: BenchmarkRun) -> harness.Harness:
    """The run's model as lm-eval sees it: a served model sent the messages its template
    writes; weights prompted through the model's template as generation renders it, or with
    the task's raw text when the run asks for that."""
    model = run.model
    if model.is_endpoint:
        template = as_template(template_for(model))
        # The one client every run uses: the row's key, allowed hosts, no redirects.
        lm = harness.served_model(language_model_endpoint(model=model), template)
        return harness.Harness(lm, task_dirs(), chat=True, label=harness.SERVED_FORMAT)
    if run.prompt == BenchmarkRun.PromptMode.RAW:
        tokenizer, weights = language_model_load(model=model)
        lm = harness.hf_model(weights, tokenizer, batch_size=run.batch_size)
        return harness.Harness(lm, task_dirs(), chat=False, label=harness.RAW_FORMAT)
    template = as_template(template_for(model))
    tokenizer, weights = language_model_load(model=model)
    lm = harness.templated_model(weights, tokenizer, template, batch_size=run.batch_size)
    label = f"{template.name} v{template.version}"
    return harness.Harness(lm, task_dirs(), chat=True, label=label)


def score_missing(run_id: int, worker: str) -> None:
    """Score the run's missing tasks while this worker holds it; mark it succeeded at the end."""
    run = BenchmarkRun.objects.select_related("model", "model__base_model").get(pk=run_id)
    try:
        scored = _score(run, run.tasks, lambda: _held(run_id, worker).exists())
    except (harness.HarnessMissing, ServiceError) as exc:
        _fail(run_id, worker, str(exc))
        return
    if scored:
        _held(run_id, worker).update(
            status=BenchmarkRun.Status.SUCCEEDED, finished_at=timezone.now(), error=""
        )


def score_shard(run_id: int, shard) -> bool:
    """Score the missing tasks of the shard's range of ``run.tasks`` while it holds the shard;
    True when every one of them has results. (A missing harness fails the shard, and so the
    run, with its message.)"""
    run = BenchmarkRun.objects.select_related("model", "model__base_model").get(pk=run_id)
    tasks = run.tasks[shard.start : shard.stop]
    try:
        _score(run, tasks, shard.held)
    except (harness.HarnessMissing, ServiceError) as exc:
        raise RuntimeError(str(exc)) from None
    return set(tasks) <= stored_tasks(run)


def _score(run: BenchmarkRun, tasks: list[str], held) -> bool:
    """Score those of ``tasks`` with no results while ``held()``; False when it stopped because
    the run (or shard) was no longer held."""
    run_id = run.pk
    done = stored_tasks(run)
    missing = [task for task in tasks if task not in done]
    version = harness.harness_version()
    BenchmarkRun.objects.filter(pk=run_id, status=BenchmarkRun.Status.RUNNING).update(
        harness_version=version, done=len(done)
    )
    if missing:
        bench = _harness(run)
    for task in missing:
        if not held():
            log.info("benchmark run %s is no longer held (cancelled or requeued)", run_id)
            return False
        spec = harness.TaskSpec(
            name=task,
            scoring=run.scoring,
            num_fewshot=run.num_fewshot,
            limit=run.limit,
            seed=run.seed,
            gen_kwargs=run.params,
            system_instruction=run.system_instruction,
            fewshot_as_multiturn=run.fewshot_as_multiturn,
        )
        outcome = bench.evaluate(spec)
        if not _store(run, held, outcome, version=version, prompt_format=bench.prompt_format(spec)):
            return False
    return True


def _store(
    run: BenchmarkRun, still_held, outcome: TaskOutcome, *, version: str, prompt_format: str
) -> bool:
    """Write one task's results and samples and the run's progress; False (nothing written)
    when the run (or shard) is no longer this worker's."""
    scoring = harness.scoring_of(_source_type(outcome), run.scoring)
    with transaction.atomic():
        # The run row's lock: its shards store their tasks one at a time.
        held = BenchmarkRun.objects.select_for_update().filter(pk=run.pk).first()
        if held is None or not still_held():
            return False
        if held.results.filter(task=outcome.task).exists():
            return True  # stored by an earlier attempt of this run
        BenchmarkResult.objects.bulk_create(
            BenchmarkResult(
                run=held,
                task=outcome.task,
                metric=metric.name,
                value=metric.value,
                stderr=metric.stderr,
                n=outcome.n,
                num_fewshot=outcome.num_fewshot,
                scoring=scoring,
                prompt_format=prompt_format,
                config=outcome.config,
                harness_version=version,
            )
            for metric in outcome.metrics
        )
        BenchmarkSample.objects.bulk_create(
            BenchmarkSample(
                run=held,
                task=outcome.task,
                doc_id=sample.doc_id,
                prompt=sample.prompt,
                messages=sample.messages,
                target=sample.target,
                output=sample.output,
                correct=sample.correct,
                metrics=sample.metrics,
            )
            for sample in outcome.samples
        )
        done = held.results.values("task").distinct().count()
        BenchmarkRun.objects.filter(pk=held.pk).update(done=done)
    return True


def _source_type(outcome: TaskOutcome) -> str:
    # The generative variant of a multiple-choice task is generate_until in lm-eval's config;
    # the app marks it so the result still says it was a multiple-choice task scored by writing.
    metadata = outcome.config.get("metadata") or {}
    if isinstance(metadata, dict) and metadata.get("scored_as"):
        return "multiple_choice"
    return outcome.output_type
