"""Starting, advancing and cancelling sweeps through the services (no worker: the runs are only
queued, and a test sets the state a worker would leave a run in)."""

from __future__ import annotations

import pytest
from django.db.models import Q

from evalsite.accounts.models import AuditEntry
from evalsite.errors import ServiceError
from generation.models import FineTuneRun, GenerationRun
from generation.registry import language_model_register
from generation.training.finetune import TOO_MANY_ROWS
from judging.prompts import judge_prompt_for
from judging.runs import judge_run_create
from sweeps.models import Sweep, SweepCell
from sweeps.progress import BASE_ENDED, sweep_advance, sweeps_of_run
from sweeps.services import (
    BAD_METHOD,
    CANNOT_CANCEL,
    GRID_PARAM,
    SWEEP_NAME_TAKEN,
    sweep_cancel,
    sweep_create,
)
from tests.judging.factories import idle_judge
from tests.sweeps.conftest import TINY_SWEEP

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def base_model():
    # Never loaded: these tests only queue runs.
    return language_model_register(name="sweep-base", name_or_path="tiny-0")


@pytest.fixture
def start(base_model, fixture_dataset, sweep_questions, staff_user):
    def start(**changes) -> Sweep:
        values = {
            "name": "grid",
            "base_model": base_model,
            "mixes": [[fixture_dataset]],
            "rows": [4, 8],
            "learning_rates": [1e-3, 5e-3],
            "params": TINY_SWEEP,
            "prompt_set": sweep_questions,
            "judge": idle_judge(),
            "seed": 7,
            "user": staff_user,
        }
        return sweep_create(**{**values, **changes})

    return start


def _nothing_written() -> bool:
    return not (
        Sweep.objects.exists() or FineTuneRun.objects.exists() or GenerationRun.objects.exists()
    )


def test_a_sweep_queues_one_fine_tune_per_cell_and_the_base_models_answers(start, base_model):
    sweep = start()
    cells = list(sweep.cells.select_related("finetune_run").order_by("position"))
    assert [(c.rows, c.learning_rate, c.train_rows) for c in cells] == [
        (4, 1e-3, 4),
        (4, 5e-3, 4),
        (8, 1e-3, 8),
        (8, 5e-3, 8),
    ]
    for cell in cells:
        run = cell.finetune_run
        assert run.status == FineTuneRun.Status.QUEUED and run.base_model == base_model
        assert (run.learning_rate, run.epochs, run.max_steps, run.seed) == (
            cell.learning_rate,
            1.0,
            2,
            7,
        )
        assert run.model_name == f"grid-cell{cell.position}"
        assert [(s.dataset.name, s.rows) for s in run.sources.all()] == [
            ("instructions-ja", cell.rows)
        ]
        assert cell.status == SweepCell.Status.TRAINING
    assert sweep.base_run.model == base_model and sweep.base_run.seed == 7
    assert sweep.judge_prompt == judge_prompt_for()  # the latest ja_pairwise
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SWEEP_START)
    assert entry.details["cells"] == 4 and entry.details["grid"]["rows"] == [4, 8]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": [4, 1000]}, TOO_MANY_ROWS.format(name="instructions-ja", count=268, rows=1000)),
        ({"params": {"learning_rate": 1e-4}}, GRID_PARAM.format(name="learning_rate")),
        ({"methods": ["dpo"]}, BAD_METHOD.format(method="dpo")),
        ({"rows": [0]}, "rows must be positive numbers (got 0)"),
        ({"learning_rates": [1e-3, 1e-3]}, "learning rates lists 0.001 twice"),
        ({"params": {"batch_size": 0}}, "batch_size"),
        ({"name": "n" * 151}, "at most 150 characters (got 151)"),
    ],
)
def test_a_refused_sweep_leaves_nothing_behind(start, changes, message):
    with pytest.raises(ServiceError) as refused:
        start(**changes)
    assert message in str(refused.value)
    assert _nothing_written()


def test_a_sweep_name_is_unique_and_the_judge_prompt_must_fit_the_mode(start):
    start()
    with pytest.raises(ServiceError, match=SWEEP_NAME_TAKEN.format(name="grid")):
        start()
    with pytest.raises(ServiceError, match="is a grading prompt"):
        start(name="other", judge_prompt=judge_prompt_for(grading=True))
    assert Sweep.objects.count() == 1


def _succeed(run, **fields) -> None:
    type(run).objects.filter(pk=run.pk).update(status="succeeded", **fields)


def test_each_cell_moves_on_as_its_runs_finish_and_a_failed_one_stops_alone(start):
    sweep = start()
    first, second, *_ = sweep.cells.order_by("position")
    FineTuneRun.objects.filter(pk=first.finetune_run_id).update(
        status="failed", error="Traceback ...\nRuntimeError: out of memory"
    )
    tuned = language_model_register(
        name="grid-cell2", name_or_path="tiny-0", base_model=sweep.base_model, adapter_path="a/b"
    )
    _succeed(second.finetune_run, result_model=tuned)

    sweep_advance(sweep_id=sweep.pk)
    sweep_advance(sweep_id=sweep.pk)  # again: nothing started twice
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == SweepCell.Status.FAILED
    assert first.error.startswith(f"fine-tune run {first.finetune_run_id} failed: Traceback")
    assert "out of memory" in first.error
    assert second.status == SweepCell.Status.GENERATING
    assert GenerationRun.objects.filter(model=tuned).count() == 1
    assert second.generation_run.prompt_set == sweep.prompt_set
    assert second.generation_run.seed == sweep.seed
    assert Sweep.objects.get(pk=sweep.pk).status == Sweep.Status.RUNNING

    # The base model's answers failed: the cell whose answers are in cannot be compared.
    _succeed(second.generation_run)
    GenerationRun.objects.filter(pk=sweep.base_run_id).update(status="cancelled")
    sweep_advance(sweep_id=sweep.pk)
    second.refresh_from_db()
    assert second.status == SweepCell.Status.FAILED
    assert second.error == BASE_ENDED.format(id=sweep.base_run_id, status="cancelled")


def test_a_cell_whose_answers_are_in_gets_a_two_model_study_and_a_judge_run(start):
    sweep = start()
    cell = sweep.cells.order_by("position").first()
    tuned = language_model_register(name="grid-cell1", name_or_path="tiny-0")
    _succeed(cell.finetune_run, result_model=tuned)
    sweep_advance(sweep_id=sweep.pk)
    cell.refresh_from_db()
    # Answers written as a worker would; both runs succeed.
    for run in (sweep.base_run, cell.generation_run):
        for question in sweep.prompt_set.questions.all():
            run.answers.create(question=question, turn=1, text=f"{run.model.name} の回答")
        _succeed(run, done=4)
    sweep_advance(sweep_id=sweep.pk)
    cell.refresh_from_db()
    assert cell.status == SweepCell.Status.JUDGING
    assert {r.pk for r in cell.study.runs.all()} == {sweep.base_run_id, cell.generation_run_id}
    assert cell.study.comparisons.count() == 4
    assert cell.judge_run.judge == sweep.judge and cell.judge_run.total == 8
    assert sweeps_of_run(type(cell.judge_run), cell.judge_run_id) == [sweep.pk]
    assert sweeps_of_run(GenerationRun, sweep.base_run_id) == [sweep.pk]
    assert sweeps_of_run(FineTuneRun, cell.finetune_run_id) == [sweep.pk]


def test_cancelling_a_sweep_stops_every_run_it_queued(start, staff_user):
    sweep = start()
    sweep = sweep_cancel(sweep=sweep, user=staff_user)
    assert sweep.status == Sweep.Status.CANCELLED
    assert set(sweep.cells.values_list("status", flat=True)) == {SweepCell.Status.CANCELLED}
    runs = FineTuneRun.objects.filter(pk__in=sweep.cells.values("finetune_run"))
    assert set(runs.values_list("status", flat=True)) == {"cancelled"}
    assert GenerationRun.objects.get(pk=sweep.base_run_id).status == "cancelled"
    assert AuditEntry.objects.filter(
        Q(action=AuditEntry.Action.SWEEP_CANCEL), user=staff_user
    ).exists()
    with pytest.raises(ServiceError, match=CANNOT_CANCEL.format(name="grid", status="cancelled")):
        sweep_cancel(sweep=sweep)
    # A cancelled sweep does not move on, whatever its runs do.
    assert sweep_advance(sweep_id=sweep.pk).status == Sweep.Status.CANCELLED


def test_judge_runs_of_other_studies_belong_to_no_sweep(start):
    from tests.judging.factories import judge_study

    start()
    run = judge_run_create(judge=idle_judge(), study=judge_study(), enqueue=False)
    assert sweeps_of_run(type(run), run.pk) == []


def test_the_periodic_advance_takes_every_running_sweep_and_only_those(start):
    from sweeps.progress import sweeps_advance

    running = start(name="running")
    stopped = sweep_cancel(sweep=start(name="stopped"))
    FineTuneRun.objects.filter(pk=running.cells.get(position=1).finetune_run_id).update(
        status="failed", error="boom"
    )
    assert sweeps_advance() == [running.pk]
    assert running.cells.get(position=1).status == SweepCell.Status.FAILED
    assert stopped.pk not in sweeps_advance()
