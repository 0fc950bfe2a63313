"""Fine-tuning through a real Celery worker on Redis and PostgreSQL, with the tiny model:
train, generate with the result, cancel and resume, survive a killed worker."""

from __future__ import annotations

import statistics
import time

import pytest
from django.contrib.auth.models import Group, User

from annotation.loop.assign import next_pair
from annotation.loop.state import loop_state
from annotation.studies import study_create
from generation.models import FineTuneLog, FineTuneRun, GenerationRun
from generation.registry import prompt_set_import
from generation.runs import generation_run_create
from generation.training.finetune import (
    finetune_run_cancel,
    finetune_run_create,
    finetune_run_resume,
)
from tests.conftest import FIXTURES, wait_for
from tests.generation.conftest import kill_mid_run

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Generous guards against a hung worker only; nothing here asserts on time.
HUNG = 900
# The tiny model gains nothing from threads; on a small shared machine they only contend.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

TINY_LORA = {
    "learning_rate": 1e-2,
    "batch_size": 4,
    "gradient_accumulation": 1,
    "max_length": 128,
    "warmup_ratio": 0.1,
    "eval_fraction": 0.05,
}


def _start(model, dataset, model_name: str = "", **params) -> FineTuneRun:
    """A LoRA run of ``model`` on all of ``dataset``, queued for the worker."""
    return finetune_run_create(
        base_model=model,
        datasets=[(dataset, None)],
        params={**TINY_LORA, **params},
        model_name=model_name,
    )


def _run(run_id: int) -> FineTuneRun:
    return FineTuneRun.objects.get(pk=run_id)


def _finished(run_id: int) -> bool:
    return _run(run_id).status not in FineTuneRun.ACTIVE


def _train_steps(run: FineTuneRun) -> list[int]:
    return list(
        run.log_entries.filter(kind=FineTuneLog.Kind.TRAIN)
        .order_by("step")
        .values_list("step", flat=True)
    )


def _generate(model, prompt_set, worker) -> GenerationRun:
    run = generation_run_create(model=model, prompt_set=prompt_set, batch_size=25)
    wait_for(
        lambda: GenerationRun.objects.get(pk=run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"generation to finish; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + worker.log_tail()
    return run


def test_a_worker_fine_tunes_a_model_that_then_generates(
    shared_worker, tiny, fixture_dataset, model_storage
):
    worker = shared_worker(**ONE_THREAD)
    run = _start(tiny, fixture_dataset, max_steps=40, save_steps=20, model_name="tiny-tuned")
    wait_for(
        lambda: _finished(run.pk),
        timeout=HUNG,
        message=f"fine-tune to finish; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error + worker.log_tail()
    assert (run.step, run.total_steps, run.attempts) == (40, 40, 1)
    assert _train_steps(run) == list(range(1, 41))
    losses = list(
        run.log_entries.filter(kind="train").order_by("step").values_list("loss", flat=True)
    )
    assert statistics.mean(losses[-10:]) < statistics.mean(losses[:10])
    tuned = run.result_model
    assert tuned.name == "tiny-tuned" and tuned.base_model == tiny
    assert (model_storage / tuned.adapter_path / "adapter_model.safetensors").is_file()

    prompt_set = prompt_set_import(
        name="fixture", data=(FIXTURES / "prompts_ja.jsonl").read_bytes(), filename="p.jsonl"
    )
    base_run = _generate(tiny, prompt_set, worker)
    tuned_run = _generate(tuned, prompt_set, worker)
    assert tuned_run.answers.count() == 100
    base_texts = dict(base_run.answers.values_list("question_id", "text"))
    differing = sum(1 for q, t in tuned_run.answers.values_list("question_id", "text")
                    if t != base_texts[q])  # fmt: skip
    assert differing >= 50

    # The loop closes: base and fine-tuned answers go straight into a study.
    study = study_create(
        name="base vs tuned", prompt_set=prompt_set, runs=[base_run, tuned_run], open_now=True
    )
    assert study.comparisons.count() == 100
    assert set(study.comparisons.values_list("question_id", flat=True)) == set(
        prompt_set.questions.values_list("pk", flat=True)
    )
    annotator = User.objects.create_user("tuned-annotator")
    annotator.groups.add(Group.objects.get_or_create(name="annotators")[0])
    # As the API takes a pair: the loop state read first, then the claim.
    state = loop_state(study_id=study.pk, annotator=annotator)
    assignment = next_pair(state=state).assignment
    assert assignment is not None and assignment.comparison.study_id == study.pk


def test_cancel_stops_at_the_next_step_and_resume_finishes_the_run(
    shared_worker, tiny, fixture_dataset, model_storage
):
    worker = shared_worker(**ONE_THREAD)
    run = _start(tiny, fixture_dataset, max_steps=120, save_steps=1000)
    wait_for(lambda: _run(run.pk).step >= 5, timeout=HUNG, interval=0.05, message=worker.log_tail())
    finetune_run_cancel(run=_run(run.pk))
    # The worker stops after the step it is in and saves a checkpoint of that step.
    wait_for(lambda: _run(run.pk).checkpoint != "", timeout=HUNG, message=worker.log_tail())
    time.sleep(2)
    stopped = _run(run.pk)
    assert stopped.status == FineTuneRun.Status.CANCELLED
    assert 5 <= stopped.step < 120
    assert stopped.checkpoint.endswith(f"checkpoint-{stopped.step}")
    assert (model_storage / stopped.checkpoint / "trainer_state.json").is_file()
    assert stopped.result_model is None
    assert _run(run.pk).step == stopped.step  # nothing trained after the cancel

    finetune_run_resume(run=stopped)
    wait_for(lambda: _finished(run.pk), timeout=HUNG, message=worker.log_tail())
    done = _run(run.pk)
    assert done.status == FineTuneRun.Status.SUCCEEDED, done.error + worker.log_tail()
    assert done.resumed_from_step == stopped.step
    assert (done.step, done.total_steps) == (120, 120)
    assert _train_steps(done) == list(range(1, 121))
    assert done.result_model is not None


def test_a_killed_worker_is_replaced_and_the_run_resumes_from_its_checkpoint(
    celery_worker_factory, tiny, fixture_dataset, model_storage
):
    first = celery_worker_factory(**ONE_THREAD)
    run = _start(tiny, fixture_dataset, max_steps=200, save_steps=20)
    kill_mid_run(first, lambda: _run(run.pk).checkpoint != "", "a first checkpoint", timeout=HUNG)
    killed = _run(run.pk)
    assert killed.status == FineTuneRun.Status.RUNNING
    assert 20 <= killed.step < 200

    second = celery_worker_factory(**ONE_THREAD)
    wait_for(
        lambda: _finished(run.pk),
        timeout=HUNG,
        message=f"the new worker to finish the run; log:\n{second.log_tail()}",
    )
    done = _run(run.pk)
    assert done.status == FineTuneRun.Status.SUCCEEDED, done.error + second.log_tail()
    assert done.attempts >= 2
    assert done.resumed_from_step >= 20 and done.resumed_from_step % 20 == 0
    assert done.resumed_from_step <= killed.step
    assert (done.step, done.total_steps) == (200, 200)
    # Steps after the checkpoint were trained again and logged once.
    assert _train_steps(done) == list(range(1, 201))
    assert done.result_model is not None
