"""The run-finished hook sweeps register in the spine (evalsite/runs/lifecycle.py): called once a
worker lets go of a run, whatever came of it; a failing hook is logged and never fails the run."""

from __future__ import annotations

import pytest

from evalsite.runs import lifecycle
from generation.models import GenerationRun
from generation.registry import language_model_register
from generation.runs import generation_run_create
from sweeps import progress

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def queued_run(sweep_questions, settings):
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    model = language_model_register(name="hooked", name_or_path="tiny-0")
    return generation_run_create(model=model, prompt_set=sweep_questions, enqueue=False)


@pytest.fixture
def heard(monkeypatch):
    calls = []
    monkeypatch.setattr(lifecycle, "_ON_FINISHED", [lambda model, pk: calls.append((model, pk))])
    return calls


def test_sweeps_are_registered_for_every_finished_run():
    assert progress.run_finished in lifecycle._ON_FINISHED


def test_the_hook_hears_a_run_that_succeeded_and_one_that_failed(queued_run, heard):
    def work(run_id, worker):
        GenerationRun.objects.filter(pk=run_id).update(status="succeeded")

    assert lifecycle.run_held(GenerationRun, queued_run.pk, work, label="generation run")
    GenerationRun.objects.filter(pk=queued_run.pk).update(status="queued")

    def broken(run_id, worker):
        raise RuntimeError("the worker's work failed")

    assert lifecycle.run_held(GenerationRun, queued_run.pk, broken, label="generation run")
    queued_run.refresh_from_db()
    assert queued_run.status == "failed" and "the worker's work failed" in queued_run.error
    assert heard == [(GenerationRun, queued_run.pk)] * 2
    # A run that was not claimable was not let go of: nothing to hear.
    assert not lifecycle.run_held(GenerationRun, queued_run.pk, work, label="generation run")
    assert len(heard) == 2


def test_a_failing_hook_does_not_fail_the_run(queued_run, monkeypatch):
    def hook(model, pk):
        raise RuntimeError("a hook's own problem")

    monkeypatch.setattr(lifecycle, "_ON_FINISHED", [hook])

    def work(run_id, worker):
        GenerationRun.objects.filter(pk=run_id).update(status="succeeded")

    lifecycle.run_held(GenerationRun, queued_run.pk, work, label="generation run")
    queued_run.refresh_from_db()
    assert queued_run.status == "succeeded" and queued_run.error == ""
