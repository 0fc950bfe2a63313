"""Evol-Instruct through a real Celery worker on the `gpu` queue, and an evolver taught in the app
(pairs -> LoRA fine-tune) then used as the evolution model."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evolution.models import EvolutionItem, EvolutionRun
from evolution.runs import evolution_run_create
from generation.models import FineTuneRun, InstructionExample, LanguageModel
from tests.conftest import FIXTURES, wait_for
from tests.generation.conftest import register_tiny

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 900
PAIRS = FIXTURES / "evolution" / "evolver_pairs_ja.jsonl"


def _lineage_checked(run: EvolutionRun) -> int:
    """Every row of the run's data set carries its lineage; returns the number of rows."""
    dataset = run.result
    assert dataset is not None and dataset.derived_from_id == run.source_id
    rows = list(dataset.examples.all())
    assert rows and len(rows) == EvolutionItem.objects.filter(run=run, kept=True).count()
    source_ids = set(run.source.examples.values_list("pk", flat=True))
    for row in rows:
        assert row.operation and row.round is not None and row.parent_id is not None
        parent = InstructionExample.objects.get(pk=row.parent_id)
        expected = source_ids if row.round == 1 else {parent.pk}
        assert parent.pk in expected and (row.round == 1 or parent.dataset_id == dataset.pk)
    return len(rows)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_evolution_run_in_the_gpu_worker_writes_a_data_set_with_lineage(
    source, tiny_model_dir, shared_worker, capsys
):
    tiny = register_tiny(tiny_model_dir, max_new_tokens=32)
    worker = shared_worker("gpu,default")
    run = evolution_run_create(
        source=source, model=tiny, rounds=2, seed=1, batch_size=2, rules={"near_duplicate": 1.0}
    )
    wait_for(
        lambda: EvolutionRun.objects.get(pk=run.pk).status not in EvolutionRun.ACTIVE,
        timeout=HUNG,
        message=f"the worker to finish; log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == EvolutionRun.Status.SUCCEEDED, run.error + worker.log_tail()
    assert run.worker and run.done == run.total
    rows = _lineage_checked(run)
    # One item per chain and round: round 2 evolved round 1's survivors, each once.
    items = EvolutionItem.objects.filter(run=run)
    assert items.filter(round=1).count() == 4
    assert items.filter(round=2).count() == items.filter(round=1, kept=True).count()
    with capsys.disabled():
        print(f"\nworker evolution run: {run.counts}; {rows} rows kept")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db
def test_an_evolver_trained_on_pairs_in_the_app_evolves_a_data_set(
    source, tiny_model_dir, settings, capsys
):
    settings.RUN_HEARTBEAT_INTERVAL = 3600  # everything runs inline here
    register_tiny(tiny_model_dir, max_new_tokens=32)
    call_command(
        "train_evolver",
        "--pairs",
        str(PAIRS),
        "--base",
        "tiny",
        "--name",
        "tiny-evolver",
        "--params",
        '{"epochs": 1, "batch_size": 4, "gradient_accumulation": 1, "eval_fraction": 0}',
        "--inline",
    )
    out = capsys.readouterr().out
    assert "data set tiny-evolver-pairs: 12 pairs" in out and "'tiny-evolver' registered" in out
    finetune = FineTuneRun.objects.get()
    assert finetune.status == FineTuneRun.Status.SUCCEEDED and finetune.method == "lora"
    pairs = list(finetune.datasets.get().examples.order_by("position"))
    # Each training row is the rendered rewrite prompt of its operation -> the evolved text.
    assert pairs[0].instruction.endswith("#書き換えた指示#")
    assert "日本の四季について説明してください。" in pairs[0].instruction
    assert pairs[0].output.startswith("日本の四季について、それぞれの季節の")
    evolver = LanguageModel.objects.get(name="tiny-evolver")
    assert evolver.adapter_path and evolver.base_model.name == "tiny"

    call_command(
        "evolve",
        "--dataset",
        source.name,
        "--model",
        "tiny-evolver",
        "--answer-model",
        "tiny",
        "--rules",
        '{"near_duplicate": 1.0}',
        "--inline",
    )
    run = EvolutionRun.objects.get()
    assert run.status == EvolutionRun.Status.SUCCEEDED and run.model == evolver
    _lineage_checked(run)


@pytest.mark.django_db
def test_bad_pair_files_are_refused_with_file_and_line(tmp_path, tiny_model_dir):
    register_tiny(tiny_model_dir)
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"instruction": "a", "evolved": "b"}\n{"instruction": "a"}\n', encoding="utf-8")
    with pytest.raises(CommandError, match=r"pairs.jsonl, line 2: 'evolved' is missing"):
        call_command("train_evolver", "--pairs", str(bad), "--base", "tiny")
    bad.write_text('{"instruction": "a", "evolved": "b", "operation": "shout"}\n', encoding="utf-8")
    with pytest.raises(CommandError, match="line 1: unknown operation 'shout'"):
        call_command("train_evolver", "--pairs", str(bad), "--base", "tiny")
    assert not FineTuneRun.objects.exists()
