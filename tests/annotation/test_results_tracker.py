"""A study's results in each experiment tracker, offline: `export_results --to-tracker` and the
results page's button write the strengths with their intervals and win / tie / loss, and each
tracker's own library reads the same figures back (TensorBoard's event files, MLflow's file
store, a W&B offline run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation import results, tracking
from annotation.management.commands.export_results import NEEDS_FORMAT
from annotation.models import Assignment
from evalsite import trackers
from evalsite.trackers import metric_key
from tests.conftest import choice_for
from tests.tracker_stores import (
    mlflow_runs,
    tensorboard_scalars,
    tensorboard_texts,
    wandb_offline_run,
)

pytestmark = pytest.mark.django_db

BOOTSTRAP = "40"  # enough for an interval; the command and the expected fit use the same


def _vote_all(client, user, study) -> int:
    """Vote through the API until nothing is left: by the comparison's place in the study, its
    model a wins, model b wins, a wins, a tie, ... (every pair gets wins, losses and ties). By
    model, not by side: the sides are drawn at random, and votes by side made the outcome
    random too (now and then a model came out exactly even, with an interval of zero width)."""
    client.force_login(user)
    plans = ("a", "b", "a", "tie")
    place = {pk: i for i, (pk,) in enumerate(study.comparisons.order_by("pk").values_list("pk"))}
    cast = 0
    while True:
        response = client.get(f"/api/studies/{study.pk}/next/")
        if response.status_code == 204:
            client.logout()
            return cast
        token = response.json()["token"]
        assignment = Assignment.objects.get(token=token)
        plan = plans[place[assignment.comparison_id] % len(plans)]
        voted = client.post(
            f"/api/assignments/{token}/vote/",
            {"choice": choice_for(assignment, plan)},
            content_type="application/json",
        )
        assert voted.status_code in (200, 201), voted.content
        cast += 1


@pytest.fixture
def voted_study(client, annotator, make_study):
    study = make_study(models=3, questions=4, k=1)
    assert _vote_all(client, annotator, study) == 12
    return study


@pytest.fixture
def tracked(settings, tmp_path):
    """Every tracker's store in this test's folder; W&B offline."""
    settings.TENSORBOARD_LOG_DIR = tmp_path / "tensorboard"
    settings.MLFLOW_TRACKING_URI = (tmp_path / "mlruns").as_uri()
    settings.MLFLOW_EXPERIMENT_NAME = "studies"
    settings.WANDB_DIR = tmp_path / "wandb-root"
    settings.WANDB_MODE = "offline"
    settings.WANDB_PROJECT = "evalsite-tests"
    return settings


def _expected(study):
    found = results.study_results(study=study, bootstrap=int(BOOTSTRAP), seed=0)
    assert found.ranking is not None and len(found.ranking.models) == 3
    return found


def _assert_figures(metrics: dict[str, float], found) -> None:
    """The tracker's metrics are the fit's strengths, intervals and counts, per model and pair."""
    for m in found.ranking.models:
        assert metrics[metric_key("strength", m.name)] == pytest.approx(m.strength)
        assert metrics[metric_key("strength_low", m.name)] == pytest.approx(m.ci_low)
        assert metrics[metric_key("strength_high", m.name)] == pytest.approx(m.ci_high)
        assert m.ci_low < m.strength < m.ci_high
        for name in ("wins", "ties", "losses", "games"):
            assert metrics[metric_key(name, m.name)] == getattr(m, name)
    assert sum(metrics[metric_key("games", m.name)] for m in found.ranking.models) == 2 * 12
    for p in found.pairs:
        assert metrics[metric_key("pair_wins", p.label())] == p.wins
        assert metrics[metric_key("pair_ties", p.label())] == p.ties
        assert metrics[metric_key("pair_losses", p.label())] == p.losses
    assert metrics["votes"] == 12


def test_a_studys_strengths_land_in_tensorboard_event_files(tracked, tmp_path, voted_study):
    found = _expected(voted_study)
    call_command(
        "export_results", voted_study.name, "--to-tracker", "--tracker", "tensorboard",
        "--bootstrap", BOOTSTRAP,
    )  # fmt: skip
    folders = list((tmp_path / "tensorboard").glob(f"study-{voted_study.pk}-*"))
    assert len(folders) == 1, folders
    scalars = tensorboard_scalars(folders[0])
    assert all(len(points) == 1 for points in scalars.values())
    _assert_figures({tag: points[0][1] for tag, points in scalars.items()}, found)
    texts = tensorboard_texts(folders[0])
    assert f"study-{voted_study.pk}" in texts["tags"]
    for m in found.ranking.models:
        assert m.name in texts["strengths"]


def test_a_studys_strengths_land_in_mlflows_file_store(tracked, voted_study):
    tracked.EXPERIMENT_TRACKER = "mlflow"  # the site's tracker: no --tracker needed
    found = _expected(voted_study)
    call_command("export_results", voted_study.name, "--to-tracker", "--bootstrap", BOOTSTRAP)
    uri = tracked.MLFLOW_TRACKING_URI
    runs = mlflow_runs(uri, "studies", app_run=f"study-{voted_study.pk}")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["study"] == voted_study.name
    assert run.data.params["bootstrap"] == BOOTSTRAP
    assert run.data.params["voters"] == "people"
    _assert_figures(run.data.metrics, found)
    # The tables are the run's artifacts.
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    strengths = (artifacts / "strengths.csv").read_text(encoding="utf-8")
    assert strengths.splitlines()[0] == ",".join(tracking.STRENGTH_COLUMNS)
    assert strengths.splitlines()[1].split(",")[1] == found.ranking.models[0].name


def test_a_studys_strengths_land_in_a_wandb_offline_run(tracked, tmp_path, voted_study):
    found = _expected(voted_study)
    call_command(
        "export_results", voted_study.name, "--to-tracker", "--tracker", "wandb",
        "--bootstrap", BOOTSTRAP,
    )  # fmt: skip
    run, history = wandb_offline_run(tmp_path / "wandb-root")
    assert run.project == "evalsite-tests"
    assert run.display_name.startswith(f"study-{voted_study.pk}-")
    assert f"app_run:study-{voted_study.pk}" in run.tags
    assert len(history) == 1
    _assert_figures(history[0], found)
    assert history[0]["strengths/nrows"] == 3 and history[0]["pairs/nrows"] == 3


def test_the_command_still_writes_its_export_beside_the_tracker(tracked, tmp_path, voted_study):
    out = tmp_path / "results.json"
    call_command(
        "export_results", voted_study.name, "--format", "json", "--out", str(out),
        "--to-tracker", "--tracker", "tensorboard", "--bootstrap", "0",
    )  # fmt: skip
    assert out.read_text(encoding="utf-8").startswith("{")
    assert list((tmp_path / "tensorboard").glob(f"study-{voted_study.pk}-*"))


def test_the_command_says_what_is_missing(tracked, make_study, voted_study):
    with pytest.raises(CommandError, match=NEEDS_FORMAT.replace("(", r"\(").replace(")", r"\)")):
        call_command("export_results", voted_study.name)
    with pytest.raises(CommandError, match="add --to-tracker"):
        call_command("export_results", voted_study.name, "--format", "csv", "--tracker", "wandb")
    assert tracked.EXPERIMENT_TRACKER == "none"
    with pytest.raises(CommandError, match="no experiment tracker is set"):
        call_command("export_results", voted_study.name, "--to-tracker")
    empty = make_study(models=2, questions=2, k=1)
    with pytest.raises(CommandError, match="has no fit to log: no votes yet"):
        call_command("export_results", empty.name, "--to-tracker", "--tracker", "mlflow")
    with pytest.raises(CommandError, match="voters=all has no single fit"):
        call_command(
            "export_results", voted_study.name, "--to-tracker", "--tracker", "mlflow",
            "--voters", "all",
        )  # fmt: skip


def test_the_results_page_logs_what_it_shows(tracked, tmp_path, client, staff_user, voted_study):
    page = f"/studies/{voted_study.pk}/results/"
    client.force_login(staff_user)
    assert "No experiment tracker is set" in client.get(page).content.decode()
    tracked.EXPERIMENT_TRACKER = "tensorboard"
    shown = client.get(page + "?method=davidson").content.decode()
    assert "Log to tensorboard" in shown
    assert 'name="query" value="method=davidson"' in shown
    response = client.post(
        f"/studies/{voted_study.pk}/results/tracker/", {"query": "method=davidson"}, follow=True
    )
    assert response.redirect_chain[-1][0] == page + "?method=davidson#tracker"
    text = response.content.decode()
    assert "Logged to tensorboard as run study-" in text
    folder = next((tmp_path / "tensorboard").glob(f"study-{voted_study.pk}-*"))
    fitted = results.study_ranking(study=voted_study, method="davidson")
    scalars = tensorboard_scalars(folder)
    for m in fitted.models:
        assert scalars[metric_key("strength", m.name)][0][1] == pytest.approx(m.strength)
    assert "davidson" in tensorboard_texts(folder)["params"]


def test_the_button_speaks_japanese(tracked, client, staff_user, voted_study):
    client.force_login(staff_user)
    page = f"/studies/{voted_study.pk}/results/"
    shown = client.get(page, headers={"accept-language": "ja"}).content.decode()
    assert "実験トラッカーが設定されていません" in shown
    tracked.EXPERIMENT_TRACKER = "tensorboard"
    shown = client.get(page, headers={"accept-language": "ja"}).content.decode()
    assert "実験トラッカー" in shown and "tensorboard に記録" in shown
    assert "Log to" not in shown


def test_the_button_refuses_bad_options_and_staff_without_the_permission(
    tracked, tmp_path, client, bare_staff, staff_user, voted_study
):
    tracked.EXPERIMENT_TRACKER = "tensorboard"
    url = f"/studies/{voted_study.pk}/results/tracker/"
    client.force_login(bare_staff)
    assert client.post(url, {"query": ""}).status_code == 403
    client.force_login(staff_user)
    assert client.get(url).status_code == 405
    response = client.post(url, {"query": "method=elo"})
    assert response.status_code == 400
    assert "unknown method 'elo'" in response.content.decode()
    assert not (tmp_path / "tensorboard").exists()


def test_the_page_says_when_the_tracker_library_is_missing(tracked, monkeypatch, voted_study):
    monkeypatch.setitem(trackers.MODULES, "tensorboard", "a_module_nobody_installed")
    with pytest.raises(ValueError, match="needs the tensorboard package"):
        tracking.study_results_log(
            study=voted_study, tracker=trackers.tracker_from(tracked, "tensorboard")
        )


def test_the_tracker_engine_imports_without_django():
    script = "import sys; sys.modules['django'] = None\nimport evalsite.trackers\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
