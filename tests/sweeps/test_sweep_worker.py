"""Sweeps end to end through a real Celery worker (queues gpu and default): the tiny model tuned
with LoRA per cell, every tuned model answering the prompt set, each judged against the base
model by a served judge (the canned judge: a real HTTP server, the longer answer wins), each
cell scored; the page, the chart and the API show every cell. The advance comes from the
run-finished hook alone: no periodic task runs in these tests."""

from __future__ import annotations

import json
import struct

import pytest
from django.core.management import call_command

from annotation.models import Study
from evalsite.accounts.models import AuditEntry
from generation.models import Answer, FineTuneRun, GenerationRun
from judging.models import JudgeRun
from sweeps.models import Sweep, SweepCell
from sweeps.services import sweep_create
from sweeps.tables import sweep_cells, sweep_plot
from tests.conftest import logged_in, wait_for
from tests.generation.conftest import register_tiny
from tests.sweeps.conftest import TINY_SWEEP, grade_by_length, length_grader

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 900


def _finished(sweep_id: int, worker) -> None:
    wait_for(
        lambda: Sweep.objects.get(pk=sweep_id).status != Sweep.Status.RUNNING,
        timeout=HUNG,
        message=f"sweep {sweep_id} to finish; worker log:\n{worker.log_tail()}",
    )


def _texts(run: GenerationRun) -> dict[int, str]:
    return {
        a.question_id: a.text.strip() for a in Answer.objects.filter(run=run).order_by("question")
    }


def _longer_wins_rate(cell_run: GenerationRun, base_run: GenerationRun) -> float:
    """The win rate the canned judge's rule gives: per question the longer answer wins (in both
    orders), equal lengths tie (half)."""
    mine, base = _texts(cell_run), _texts(base_run)
    assert mine.keys() == base.keys() and len(mine) == 4
    outcomes = [
        1.0 if len(mine[q]) > len(base[q]) else 0.5 if len(mine[q]) == len(base[q]) else 0.0
        for q in mine
    ]
    return sum(outcomes) / len(outcomes)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_two_by_two_sweep_is_tuned_answered_judged_and_scored_through_the_worker(
    shared_worker,
    tiny_model_dir,
    fixture_dataset,
    sweep_questions,
    served_judge,
    canned_judge,
    admin_user,
):
    base = register_tiny(tiny_model_dir, max_new_tokens=16)
    sweep = sweep_create(
        name="rows-by-lr",
        base_model=base,
        mixes=[[fixture_dataset]],
        rows=[4, 8],
        learning_rates=[1e-3, 5e-3],
        params=TINY_SWEEP,
        prompt_set=sweep_questions,
        judge=served_judge,
        human_study=True,
        seed=3,
        user=admin_user,
    )
    cells = list(sweep.cells.order_by("position"))
    assert [(c.rows, c.learning_rate, c.method) for c in cells] == [
        (4, 1e-3, "lora"),
        (4, 5e-3, "lora"),
        (8, 1e-3, "lora"),
        (8, 5e-3, "lora"),
    ]
    assert all(c.finetune_run.status == FineTuneRun.Status.QUEUED for c in cells)

    worker = shared_worker("gpu,default")
    _finished(sweep.pk, worker)

    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.SUCCEEDED, sweep.error
    assert sweep.base_run.status == GenerationRun.Status.SUCCEEDED
    for cell in sweep.cells.order_by("position"):
        assert cell.status == SweepCell.Status.SUCCEEDED, cell.error
        tune = cell.finetune_run
        assert tune.status == FineTuneRun.Status.SUCCEEDED and tune.step == 2
        assert tune.learning_rate == cell.learning_rate and tune.sources.get().rows == cell.rows
        answers = cell.generation_run
        assert answers.model == tune.result_model and answers.done == 4
        judged = cell.judge_run
        assert judged.status == JudgeRun.Status.SUCCEEDED and judged.prompt.name == "ja_pairwise"
        assert set(judged.study.runs.all()) == {sweep.base_run, answers}
        # Four questions, each judged in both orders; the score is the rule's win rate.
        assert cell.counted == 8
        assert cell.score == pytest.approx(_longer_wins_rate(answers, sweep.base_run), abs=1e-4)
        assert cell.ci_low <= cell.score <= cell.ci_high
    assert len(canned_judge.asked) == 4 * 8

    # The human study: the base model and every cell's model, a draft for people.
    study = Study.objects.get(pk=sweep.study_id)
    assert study.status == Study.Status.DRAFT
    assert {sr.run_id for sr in study.study_runs.all()} == {
        sweep.base_run_id,
        *(c.generation_run_id for c in sweep.cells.all()),
    }

    # The table, the page and the chart show every cell and mark the same best one.
    rows = sweep_cells(sweep)
    ranked = sorted(((c["score"], c["ci_low"]), c["position"]) for c in rows)
    unique = ranked[-1][0] != ranked[-2][0]
    best = ranked[-1][1] if unique else None  # a shared top names no best cell
    assert [c["position"] for c in rows if c["best"]] == ([best] if best else [])
    chart = sweep_plot(sweep)
    assert chart.best == best
    scores = [c["score"] for c in rows]  # positions 1-4: (4, 1e-3) (4, 5e-3) (8, 1e-3) (8, 5e-3)
    assert chart.lines == {
        "": {1e-3: [(4, scores[0]), (8, scores[2])], 5e-3: [(4, scores[1]), (8, scores[3])]}
    }
    assert _png_size(chart.data)[0] > 300

    client = logged_in(admin_user)
    page = client.get(f"/staff/sweeps/{sweep.pk}/").content.decode()
    for c in rows:
        assert f'data-position="{c["position"]}"' in page
        assert f"{c['score']:.3f}" in page
    assert page.count('class="best"') == (1 if best else 0)
    assert (f"Best cell: #{best} " in page) == bool(best)
    png = client.get(f"/staff/sweeps/{sweep.pk}/chart.png")
    assert png["Content-Type"] == "image/png" and png.content == chart.data
    listed = client.get(f"/api/sweeps/{sweep.pk}/").json()
    assert [c["score"] for c in listed["cells"]] == [c["score"] for c in rows]
    assert listed["counts"]["succeeded"] == 4
    assert client.get(f"/api/sweeps/{sweep.pk}/plot/")["Content-Type"] == "image/png"
    assert AuditEntry.objects.filter(action=AuditEntry.Action.SWEEP_START).count() == 1


def test_the_sweep_command_waits_for_a_graded_sweep_and_prints_every_cell(
    shared_worker,
    tiny_model_dir,
    fixture_dataset,
    sweep_questions,
    served_judge,
    canned_judge,
    capsys,
    settings,
):
    settings.WAIT_POLL_SECONDS = 0.3
    canned_judge.reply = length_grader
    register_tiny(tiny_model_dir, max_new_tokens=16)
    worker = shared_worker("gpu,default")
    shared = {k: v for k, v in TINY_SWEEP.items() if k != "max_steps"}
    call_command(
        "sweep",
        "--base=tiny",
        f"--dataset={fixture_dataset.name}",
        "--rows=4",
        "--lr=1e-3,5e-3",
        "--max-steps=2",
        f"--params={json.dumps(shared)}",
        f"--prompt-set={sweep_questions.name}",
        "--max-new-tokens=16",
        f"--judge={served_judge.name}",
        "--mode=grading",
        "--name=graded",
        "--wait",
    )
    out = capsys.readouterr().out
    sweep = Sweep.objects.get(name="graded")
    assert sweep.status == Sweep.Status.SUCCEEDED, worker.log_tail()
    base_grades = [grade_by_length(t) for t in _texts(sweep.base_run).values()]
    for cell in sweep.cells.order_by("position"):
        grades = [grade_by_length(t) for t in _texts(cell.generation_run).values()]
        assert cell.status == SweepCell.Status.SUCCEEDED
        assert cell.judge_run.prompt.name == "ja_grading"
        assert cell.score == pytest.approx(sum(grades) / 4, abs=1e-4)
        assert cell.baseline == pytest.approx(sum(base_grades) / 4, abs=1e-4)
        assert cell.counted == 4
        assert f"cell {cell.position} (" in out and f"{cell.score:.3f} [" in out
    # Each cell's line as it changes state, then the final table with the best one marked.
    table = out.split(f"sweep {sweep.pk} succeeded\n")[1]
    first, second = sweep.cells.order_by("position")
    tied = (first.score, first.ci_low) == (second.score, second.ci_low)
    assert table.count("<- best") == (0 if tied else 1) and table.count("  cell ") == 2
    assert ("no single best cell" in table) == tied
