"""Generation through a real Celery worker on Redis and PostgreSQL, with the tiny model."""

from __future__ import annotations

import pytest
from django.db.models import Count

from generation.models import Answer, GenerationRun, PromptSet
from generation.registry import language_model_register, prompt_set_import, storage_relative
from generation.runs import generation_run_cancel, generation_run_create, generation_run_retry
from generation.templates import template_latest
from tests.conftest import FIXTURES, wait_for
from tests.generation.conftest import kill_mid_run

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Generous guards against a hung worker only; nothing here asserts on time.
HUNG = 900


def _setup(tiny_model_dir, model_storage, name: str = "tiny") -> tuple:
    prompt_set = prompt_set_import(
        name="fixture",
        data=(FIXTURES / "prompts_ja.jsonl").read_bytes(),
        filename="prompts_ja.jsonl",
    )
    model = language_model_register(
        name=name,
        name_or_path=storage_relative(tiny_model_dir),
        prompt_format="line_sft",
        generation_defaults={"max_new_tokens": 48},
    )
    return prompt_set, model


def _status(run_id: int) -> GenerationRun:
    return GenerationRun.objects.get(pk=run_id)


def test_a_worker_generates_every_answer_of_a_prompt_set(
    shared_worker, tiny_model_dir, model_storage
):
    prompt_set, model = _setup(tiny_model_dir, model_storage)
    assert not storage_relative(tiny_model_dir).startswith("/")
    worker = shared_worker()
    run = generation_run_create(model=model, prompt_set=prompt_set, batch_size=16)

    wait_for(
        lambda: _status(run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"run to finish; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + worker.log_tail()
    assert (run.done, run.total) == (100, 100)
    assert run.answers.count() == 100
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    texts = list(run.answers.values_list("text", flat=True))
    assert sum(1 for t in texts if t.strip()) >= 90
    assert not any("ユーザー:" in t or "</s>" in t for t in texts)
    # Provenance on every answer, and the template version the run used.
    assert run.template == template_latest("line_sft")
    for answer in run.answers.all():
        assert answer.turn == 1
        assert answer.prompt_text == f"ユーザー: {answer.question.text}\nシステム: "
        assert answer.prompt_tokens > 0 and answer.model_revision.startswith("sha256:")
        assert answer.decoding == {"max_new_tokens": 48, "do_sample": False, "seed": 0}
        assert answer.stop_reason in ("eos", "stop_string", "length")
        assert answer.truncated == (answer.stop_reason == "length")


@pytest.mark.quick  # `make test-quick` runs this one of its family
def test_a_killed_worker_is_replaced_and_the_run_resumes_without_duplicates(
    celery_worker_factory, tiny_model_dir, model_storage
):
    prompt_set, model = _setup(tiny_model_dir, model_storage)
    first = celery_worker_factory()
    # Small batches so the run is still going when the worker is killed.
    run = generation_run_create(model=model, prompt_set=prompt_set, batch_size=2)
    # kill -9 of the whole worker process group, mid-run
    kill_mid_run(first, lambda: _status(run.pk).done >= 10, "first answers", timeout=HUNG)
    killed = _status(run.pk)
    assert killed.status == GenerationRun.Status.RUNNING
    assert 10 <= killed.done < 100
    kept = set(Answer.objects.filter(run=run).values_list("pk", flat=True))

    second = celery_worker_factory()
    wait_for(
        lambda: _status(run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"the new worker to finish the run; log:\n{second.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + second.log_tail()
    assert run.attempts >= 2
    assert (run.done, run.answers.count()) == (100, 100)
    per_question = Answer.objects.filter(run=run).values("question").annotate(n=Count("id"))
    assert {row["n"] for row in per_question} == {1}
    # What the killed worker had committed is kept, not generated again.
    assert kept <= set(Answer.objects.filter(run=run).values_list("pk", flat=True))


def test_cancelling_a_running_run_stops_the_worker(shared_worker, tiny_model_dir, model_storage):
    prompt_set, model = _setup(tiny_model_dir, model_storage)
    worker = shared_worker()
    run = generation_run_create(model=model, prompt_set=prompt_set, batch_size=2)
    wait_for(lambda: _status(run.pk).done >= 4, timeout=HUNG, interval=0.05)
    generation_run_cancel(run=_status(run.pk))
    # The worker stops before its next batch: the answer count stops growing.
    wait_for(lambda: _stopped_growing(run.pk), timeout=HUNG, message=worker.log_tail())
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    assert run.answers.count() < 100

    # Retry generates only what is missing, and finishes.
    generation_run_retry(run=run)
    wait_for(lambda: _status(run.pk).status not in GenerationRun.ACTIVE, timeout=HUNG)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + worker.log_tail()
    assert run.answers.count() == 100
    assert PromptSet.objects.get(pk=prompt_set.pk).has_answers


def _stopped_growing(run_id: int) -> bool:
    import time

    before = Answer.objects.filter(run_id=run_id).count()
    time.sleep(2)
    return Answer.objects.filter(run_id=run_id).count() == before
