"""The run spine: one registry of kinds, one generic task, and the periodic requeue that covers
stale heartbeats and queued runs whose message was lost."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from django.utils import timezone

from evalsite.celery import app
from evalsite.errors import StateConflict
from evalsite.runs import kinds, lifecycle
from evalsite.runs.kinds import DEFAULT, GPU
from generation.models import GenerationRun
from generation.registry import language_model_register, prompt_set_import, storage_relative
from generation.runs import GENERATION_RUN, generation_run_create
from tests.conftest import FIXTURES, REPO, wait_for

HUNG = 900


def _prompt_set(count: int = 4):
    lines = (FIXTURES / "prompts_ja.jsonl").read_bytes().splitlines(keepends=True)[:count]
    return prompt_set_import(name="spine", data=b"".join(lines), filename="p.jsonl")


def _model(tiny_model_dir):
    return language_model_register(
        name="tiny",
        name_or_path=storage_relative(tiny_model_dir),
        prompt_format="line_sft",
        generation_defaults={"max_new_tokens": 16},
    )


def test_every_run_kind_is_registered_once_with_its_queue_rule():
    keys = {kind.key for kind in kinds.all_kinds()}
    assert keys == {
        "generation.generationrun",
        "generation.finetunerun",
        "judging.judgerun",
        "evolution.evolutionrun",
        "benchmarks.benchmarkrun",
        "annotation.stageplan",
    }
    assert kinds.kind_of(GenerationRun) is GENERATION_RUN
    assert kinds.kind_of("generation.generationrun") is GENERATION_RUN
    with pytest.raises(LookupError, match="no run kind"):
        kinds.kind_of("generation.answer")


def test_the_project_has_at_most_six_celery_tasks():
    # Celery's own tasks are named celery.*; ours are every other registered task.
    app.loader.import_default_modules()
    ours = sorted(name for name in app.tasks if not name.startswith("celery."))
    assert len(ours) <= 6, ours
    assert "runs.execute" in ours and "runs.requeue" in ours


@pytest.mark.django_db
def test_a_served_models_run_takes_the_default_queue_and_weights_the_gpu_queue(
    tiny_model_dir,
):
    from generation.registry import language_model_register as register

    prompt_set = _prompt_set()
    weights = generation_run_create(
        model=_model(tiny_model_dir), prompt_set=prompt_set, enqueue=False
    )
    served_model = register(name="served", endpoint_url="http://127.0.0.1:9/v1", endpoint_model="m")
    served = generation_run_create(model=served_model, prompt_set=prompt_set, enqueue=False)
    assert GENERATION_RUN.queue(weights) == GPU
    assert GENERATION_RUN.queue(served) == DEFAULT


@pytest.mark.django_db
def test_a_queued_run_is_sent_again_only_after_the_resend_interval(tiny_model_dir, settings):
    settings.RUN_QUEUED_RESEND_SECONDS = 600
    run = generation_run_create(
        model=_model(tiny_model_dir), prompt_set=_prompt_set(), enqueue=False
    )
    assert lifecycle.resend_lost(GENERATION_RUN) == []
    old = timezone.now() - dt.timedelta(seconds=601)
    GenerationRun.objects.filter(pk=run.pk).update(created_at=old)
    sent = []
    from evalsite.runs import tasks

    original = tasks.run_execute_task.apply_async
    tasks.run_execute_task.apply_async = lambda args, queue: sent.append((args, queue))
    try:
        from django.db import transaction

        with transaction.atomic():
            assert lifecycle.resend_lost(GENERATION_RUN) == [run.pk]
        # Sent once, then not again within the interval (heartbeat_at now says when).
        assert lifecycle.resend_lost(GENERATION_RUN) == []
    finally:
        tasks.run_execute_task.apply_async = original
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.QUEUED and run.heartbeat_at is not None


@pytest.mark.django_db
def test_cancel_and_retry_refuse_a_run_in_the_wrong_state_with_a_conflict(tiny_model_dir):
    run = generation_run_create(
        model=_model(tiny_model_dir), prompt_set=_prompt_set(), enqueue=False
    )
    with pytest.raises(StateConflict, match="only failed or cancelled runs can be retried"):
        lifecycle.retry(run)
    lifecycle.cancel(run)
    with pytest.raises(StateConflict, match="generation run .* is cancelled; only queued"):
        lifecycle.cancel(run)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_queued_run_whose_message_was_dropped_is_sent_again_and_finishes_once(
    celery_worker_factory, tiny_model_dir
):
    prompt_set = _prompt_set()
    model = _model(tiny_model_dir)
    # The row is written but its message never reaches the broker: a lost message.
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    worker = celery_worker_factory(RUN_QUEUED_RESEND_SECONDS=3)
    wait_for(
        lambda: GenerationRun.objects.get(pk=run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"the lost run to be sent again and finish; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + worker.log_tail()
    assert run.attempts == 1
    assert run.answers.count() == run.total == 4
    log = worker.log_tail(200_000)
    assert "sent again generation runs queued with no worker taking them" in log
    # Executed once: one claim, and a later check sends nothing for a finished run.
    assert log.count(f"generation run {run.pk} is not claimable") <= log.count("runs.execute") - 1
    assert lifecycle.resend_lost(GENERATION_RUN) == []


def test_no_engine_imports_django():
    engines = [
        "generation.engine.render",
        "generation.engine.generate",
        "generation.engine.train",
        "judging.engine.verdicts",
        "judging.engine.bootstrap",
        "evolution.engine.elimination",
        "evolution.engine.operations",
        "annotation.ranking",
        "sweeps.grid",
        "evalsite.exports",
    ]
    script = "import sys; sys.modules['django'] = None\n" + "".join(
        f"import {name}\n" for name in engines
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
