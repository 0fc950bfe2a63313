"""A run that stopped part-way resumes without making an item twice, and a run whose evolver,
answer model and judge are served (the tiny model behind `transformers serve`) goes through the
endpoint engine with the judge asked about every instruction the cheap rules left."""

from __future__ import annotations

import pytest

from evalsite.runs.workers import run_queue
from evolution.models import EvolutionItem, EvolutionRun
from evolution.runs import evolution_run_create, evolution_run_execute, evolution_run_retry
from generation.registry import language_model_register
from tests.generation.conftest import register_tiny

from .test_worker_and_evolver import _lineage_checked

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _quiet_heartbeat(settings):
    settings.RUN_HEARTBEAT_INTERVAL = 3600  # the runs are inline and short


def test_a_run_that_died_after_round_1_resumes_with_round_2_only(source, tiny_model_dir):
    tiny = register_tiny(tiny_model_dir, max_new_tokens=32)
    run = evolution_run_create(
        source=source, model=tiny, rounds=2, seed=1, rules={"near_duplicate": 1.0}, enqueue=False
    )
    evolution_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == EvolutionRun.Status.SUCCEEDED, run.error
    first = {i.pk: (i.instruction, i.answer) for i in EvolutionItem.objects.filter(run=run)}
    again_round2 = {
        (i.source_example_id, i.instruction) for i in EvolutionItem.objects.filter(run=run, round=2)
    }
    assert again_round2, "round 1 kept nothing; nothing to resume"
    # As if its worker had died after round 1: round 2 and the data set were never written.
    EvolutionItem.objects.filter(run=run, round=2).delete()
    run.result.delete()
    EvolutionRun.objects.filter(pk=run.pk).update(status=EvolutionRun.Status.FAILED)
    run.refresh_from_db()

    evolution_run_retry(run=run)
    evolution_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == EvolutionRun.Status.SUCCEEDED and run.attempts == 2
    items = EvolutionItem.objects.filter(run=run)
    # Round 1 untouched; round 2 made again, the same (operations and sampling are keyed by
    # seed, round and row), once per chain.
    assert {i.pk: (i.instruction, i.answer) for i in items.filter(round=1)} == {
        pk: v for pk, v in first.items() if items.filter(pk=pk, round=1).exists()
    }
    assert {(i.source_example_id, i.instruction) for i in items.filter(round=2)} == again_round2
    assert run.done == items.count()
    _lineage_checked(run)


def test_served_models_evolve_answer_and_judge_through_the_endpoint_engine(source, tiny_server):
    served = language_model_register(
        name="served-tiny",
        prompt_format="plain",
        endpoint_url=tiny_server.url,
        endpoint_model=tiny_server.model_id,
        endpoint_concurrency=2,
        generation_defaults={"max_new_tokens": 32},
    )
    run = evolution_run_create(
        source=source,
        model=served,
        judge=served,
        params={"max_new_tokens": 32},
        answer_params={"max_new_tokens": 32},
        rules={"near_duplicate": 1.0},
        enqueue=False,
    )
    assert run_queue(run) == "default"
    evolution_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == EvolutionRun.Status.SUCCEEDED, run.error
    items = list(EvolutionItem.objects.filter(run=run))
    assert len(items) == 4 and all(i.output for i in items)
    # The judge was asked about every instruction that passed the copy, prompt and duplicate
    # checks; its output (parsed, or not: then the cheap rule decided) is kept on the item.
    asked = [i for i in items if i.judge_output]
    assert asked and all(
        i.kept or i.drop_rule in ("no_new_information", "refusal", "empty_answer") for i in asked
    )
    if run.result_id:
        _lineage_checked(run)
