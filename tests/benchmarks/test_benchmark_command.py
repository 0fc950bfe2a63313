"""`manage.py benchmark`: a run in this process printed as a table; what it says when lm-eval
is missing (and that the web process never needs lm-eval)."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from benchmarks.engine.harness import LM_EVAL_MISSING
from benchmarks.models import BenchmarkResult, BenchmarkRun, BenchmarkSample
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from evalsite.accounts.models import AuditEntry
from tests.conftest import REPO

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
INSTALL = "pip install -e '.[bench]'"


@pytest.mark.slow
def test_the_command_runs_inline_and_prints_the_results_table(tiny, inline):
    out = StringIO()
    call_command(
        "benchmark",
        "--model=tiny",
        "--tasks=ja_fixture_mc,ja_fixture_gen",
        "--num-fewshot=2",
        "--limit=3",
        "--inline",
        stdout=out,
        stderr=StringIO(),
    )
    run = BenchmarkRun.objects.get()
    text = out.getvalue()
    assert text.startswith(
        f"benchmark run {run.pk}: tiny on ja_fixture_mc, ja_fixture_gen "
        "(loglikelihood, 2-shot, limit 3)"
    )
    assert f"benchmark run {run.pk} succeeded: 2/2 tasks" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    assert lines[header].split() == [
        "task", "metric", "value", "stderr", "n", "shots", "scoring", "prompt"
    ]  # fmt: skip
    mc, gen = lines[header + 2].split(), lines[header + 3].split()
    acc = BenchmarkResult.objects.get(run=run, task="ja_fixture_mc")
    # Prompted through the model's template (line_sft), the few-shot examples as earlier turns.
    templated = ["line_sft", "v1,", "few-shot", "as", "turns"]
    assert mc == ["ja_fixture_mc", "acc", f"{acc.value:.4f}", f"{acc.stderr:.4f}", "3", "2",
                  "loglikelihood", *templated]  # fmt: skip
    assert gen[:2] == ["ja_fixture_gen", "exact_match,strip"] and gen[4:] == [
        "3", "2", "generative", *templated
    ]  # fmt: skip
    assert lines[header + 4] == f"({run.harness_version})"
    assert BenchmarkSample.objects.filter(run=run).count() == 6
    start = AuditEntry.objects.get(action=AuditEntry.Action.BENCHMARK_RUN_START)
    assert start.details["tasks"] == ["ja_fixture_mc", "ja_fixture_gen"]


def test_unknown_model_or_task_is_a_command_error(tiny):
    with pytest.raises(CommandError, match="no model named 'nobody'"):
        call_command("benchmark", "--model=nobody", "--tasks=ja_fixture_mc")
    with pytest.raises(CommandError, match="unknown benchmark task 'jglue'"):
        call_command("benchmark", "--model=tiny", "--tasks=jglue")
    assert not BenchmarkRun.objects.exists()


def test_without_lm_eval_inline_is_refused_and_a_worker_fails_the_run_saying_what_to_install(
    tiny, inline, monkeypatch
):
    # None in sys.modules: `import lm_eval` raises ImportError, as where it is not installed.
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(CommandError) as raised:
        call_command("benchmark", "--model=tiny", "--tasks=ja_fixture_mc", "--inline")
    assert INSTALL in str(raised.value)
    assert not BenchmarkRun.objects.exists()

    # Queued from a web process without lm-eval (nothing there needs it), taken by a worker
    # without it: the run fails with the same sentence, and nothing half-written.
    run = benchmark_run_create(model=tiny, tasks=["ja_fixture_mc"], enqueue=False)
    benchmark_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.FAILED
    assert run.error.startswith("lm-evaluation-harness (lm_eval) cannot be imported")
    assert INSTALL in run.error and INSTALL in LM_EVAL_MISSING
    assert not run.results.exists() and not run.samples.exists()


def test_the_web_side_of_benchmarks_imports_without_lm_eval():
    script = (
        "import sys; sys.modules['lm_eval'] = None\n"
        "import django; django.setup()\n"
        "import benchmarks.admin, benchmarks.api, benchmarks.runs, benchmarks.execution\n"
        "import evalsite.runs.tasks, benchmarks.results, benchmarks.api_urls\n"
        "from benchmarks.catalog import task_rows\n"
        "names = {row['name'] for row in task_rows()}\n"
        "assert {'ja_fixture_mc', 'ja_fixture_gen'} <= names, names\n"
        "print('ok')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "evalsite.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
