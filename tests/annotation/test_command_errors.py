"""Commands refuse bad paths and options in one line, before anything is made, and print no
stray lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from evalsite.cli import OUT_IS_FOLDER, OUT_NO_FOLDER
from generation.management.commands.import_prompts import NAME_TAKEN_FLAG
from generation.models import PreferenceDataset

REPO = Path(settings.BASE_DIR)


def test_export_results_into_a_missing_folder_is_one_line_without_a_traceback(tmp_path):
    out = tmp_path / "missing" / "pairs.csv"
    done = subprocess.run(
        [sys.executable, "manage.py", "export_results", "any", "--format", "csv", "--out", out],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "CommandError: " + OUT_NO_FOLDER.format(
        path=out, folder=out.parent
    )
    assert "Traceback" not in done.stderr and not out.parent.exists()


@pytest.mark.django_db
def test_export_results_refuses_a_folder_as_out(tmp_path):
    with pytest.raises(CommandError) as refused:
        call_command("export_results", "any", "--format", "csv", "--out", str(tmp_path))
    assert str(refused.value) == OUT_IS_FOLDER.format(path=tmp_path)


@pytest.mark.django_db
def test_export_preferences_into_a_missing_folder_stores_nothing(tmp_path, make_study):
    study = make_study(models=2, questions=2, k=1)
    out = tmp_path / "nowhere" / "pairs.jsonl"
    with pytest.raises(CommandError) as refused:
        call_command("export_preferences", study.name, "--out", str(out))
    assert str(refused.value) == OUT_NO_FOLDER.format(path=out, folder=out.parent)
    assert not PreferenceDataset.objects.exists()


@pytest.mark.django_db
def test_a_taken_prompt_set_name_names_the_replace_flag(tmp_path):
    questions = tmp_path / "q.csv"
    questions.write_text("question\n眠れないときはどうすればよいですか。\n", encoding="utf-8")
    call_command("import_prompts", str(questions), "--name", "taken")
    with pytest.raises(CommandError) as refused:
        call_command("import_prompts", str(questions), "--name", "taken")
    assert str(refused.value) == NAME_TAKEN_FLAG.format(name="taken")
    assert "--replace" in str(refused.value)
    call_command("import_prompts", str(questions), "--name", "taken", "--replace")


def test_asking_the_embedded_broker_for_workers_logs_no_hostname_line(tmp_path):
    """What every --wait does while a run is queued (``workers.census``), on the embedded
    broker a fresh clone uses: no "No hostname was supplied" line on the terminal."""
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    code = (
        "import django; django.setup()\n"
        "from evalsite.runs import workers\n"
        "found = workers.census(timeout=0.5)\n"
        "print('known', found.known)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            **env,
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "evalsite.settings",
            "VAR_DIR": str(tmp_path),
        },
        check=True,
    )
    assert done.stdout.strip() == "known True"
    assert "hostname" not in done.stderr.lower(), done.stderr
