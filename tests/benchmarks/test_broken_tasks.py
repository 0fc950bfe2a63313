"""One malformed task YAML among the team's tasks: the catalogue (API, admin form, ``benchmark
--list``) shows it with its error, and runs of the other tasks are made and scored as before;
a run naming it is refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.contrib.admin import helpers
from django.core.management import CommandError, call_command

from benchmarks.models import BenchmarkRun
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from evalsite.errors import ServiceError
from tests.conftest import logged_in

from .conftest import bench_staff

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"
BROKEN_YAML = "task: ja_broken\ndoc_to_text: [unclosed\n"


@pytest.fixture
def tasks_with_a_broken_file(settings, tmp_path):
    folder = tmp_path / "team_tasks"
    shutil.copytree(FIXTURES, folder)
    (folder / "ja_broken.yaml").write_text(BROKEN_YAML, encoding="utf-8")
    settings.BENCHMARK_TASK_DIRS = [str(folder)]
    return folder


def test_the_task_api_lists_the_broken_file_with_its_error(
    django_user_model, tasks_with_a_broken_file
):
    client = logged_in(bench_staff(django_user_model))
    response = client.get("/api/benchmark-tasks/")
    assert response.status_code == 200
    rows = {row["path"]: row for row in response.json()}
    broken = rows["team_tasks/ja_broken.yaml"]
    assert broken["kind"] == "broken" and broken["source"] == "custom"
    assert broken["error"].startswith("team_tasks/ja_broken.yaml: not a readable task config (")
    assert str(tasks_with_a_broken_file) not in broken["error"]  # no server path
    assert rows["team_tasks/ja_fixture_mc.yaml"]["error"] == ""
    assert rows["team_tasks/ja_fixture_mc.yaml"]["kind"] == "task"


def test_list_prints_the_catalogue_and_the_file_left_out(tasks_with_a_broken_file, capsys):
    call_command("benchmark", "--list")
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["task", "kind", "output_type", "source", "path"]
    assert any(line.split()[:2] == ["ja_fixture_mc", "task"] for line in out.splitlines())
    assert any(line.split()[:2] == ["japanese_leaderboard", "group"] for line in out.splitlines())
    assert "1 task file(s) left out (they cannot be read):" in out
    assert "  team_tasks/ja_broken.yaml: team_tasks/ja_broken.yaml: not a readable" in out


def test_help_names_list_and_model_and_tasks_are_asked_for_without_it(capsys):
    with pytest.raises(SystemExit):
        call_command("benchmark", "--help")
    assert "--list" in capsys.readouterr().out
    with pytest.raises(CommandError, match=r"^--model and --tasks required \(or --list\)$"):
        call_command("benchmark")


def test_a_run_naming_the_broken_file_is_refused_saying_why(tasks_with_a_broken_file, tiny):
    with pytest.raises(ServiceError) as refused:
        benchmark_run_create(model=tiny, tasks=["ja_broken"], enqueue=False)
    message = str(refused.value)
    assert message.startswith("unknown benchmark task 'ja_broken'; known tasks: ")
    assert message.endswith(
        "task files left out because they cannot be read (see the catalogue): "
        "team_tasks/ja_broken.yaml"
    )
    assert not BenchmarkRun.objects.exists()


def test_the_admin_form_shows_the_file_left_out(django_user_model, tasks_with_a_broken_file, tiny):
    client = logged_in(bench_staff(django_user_model))
    page = client.post(
        "/admin/generation/languagemodel/",
        {"action": "run_benchmarks", helpers.ACTION_CHECKBOX_NAME: [tiny.pk]},
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "Left out, because they cannot be read: team_tasks/ja_broken.yaml" in text
    assert 'value="ja_fixture_mc"' in text


@pytest.mark.slow
def test_runs_of_the_other_tasks_score_as_before(tasks_with_a_broken_file, tiny, inline):
    run = benchmark_run_create(model=tiny, tasks=["ja_fixture_mc"], limit=2, enqueue=False)
    benchmark_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.SUCCEEDED, run.error
    assert run.results.filter(task="ja_fixture_mc", metric="acc").exists()
