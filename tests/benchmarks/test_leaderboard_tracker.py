"""The leaderboard's button logs the table it shows (benchmark scores with their standard
errors, people's strengths with their intervals, the judge's grades) as one run of the
experiment tracker; read back from MLflow's file store with MLflow's client."""

from __future__ import annotations

import pytest

from annotation import results
from benchmarks import tracking
from evalsite.trackers import metric_key
from judging.grading import grading_results
from tests.annotation.judged import judge_model
from tests.benchmarks.test_leaderboard import MC, TUNED, benchmarks, voted_study
from tests.conftest import logged_in
from tests.judging.factories import MODEL_NAMES, grading_run
from tests.tracker_stores import mlflow_runs

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

PAGE, BUTTON = "/staff/leaderboard/", "/staff/leaderboard/tracker/"


@pytest.fixture
def ranked(annotator):
    study = voted_study(annotator)
    scores = {(m, p): 5 - m - (p == 3) for m in range(3) for p in (1, 2, 3)}
    grading = grading_run(study, judge_model(), scores)
    models, latest = benchmarks()
    return study, grading, latest


@pytest.fixture
def tracked(settings, tmp_path):
    settings.EXPERIMENT_TRACKER = "mlflow"
    settings.MLFLOW_TRACKING_URI = (tmp_path / "mlruns").as_uri()
    settings.MLFLOW_EXPERIMENT_NAME = "leaderboards"
    return settings


def test_the_leaderboard_lands_in_mlflow_as_the_page_shows_it(tracked, ranked, staff_user):
    from django.contrib.auth.models import Permission

    study, grading, latest = ranked
    staff_user.user_permissions.add(
        Permission.objects.get(content_type__app_label="benchmarks", codename="view_benchmarkrun")
    )
    client = logged_in(staff_user)
    query = f"study={study.pk}&grading={grading.pk}"
    page = client.get(f"{PAGE}?{query}").content.decode()
    assert "Log to mlflow" in page and f'value="{query.replace("&", "&amp;")}"' in page
    response = client.post(BUTTON, {"query": query}, follow=True)
    assert response.redirect_chain[-1][0] == f"{PAGE}?{query}#tracker"
    assert "Logged to mlflow as run" in response.content.decode()

    runs = mlflow_runs(tracked.MLFLOW_TRACKING_URI, "leaderboards", app_run="leaderboard")
    assert len(runs) == 1
    logged = runs[0]
    assert logged.data.tags["study_id"] == str(study.pk)
    assert logged.data.tags["grading_run"] == str(grading.pk)
    metrics = logged.data.metrics
    # Benchmark scores with their standard errors: the latest succeeded run's.
    base = MODEL_NAMES[0]
    mc_ll = f"{MC}.acc.loglikelihood.0shot"
    assert metrics[metric_key(mc_ll, base)] == pytest.approx(0.625)
    assert metrics[metric_key(f"{mc_ll}_stderr", base)] == pytest.approx(0.0523)
    assert metrics[metric_key(mc_ll, TUNED)] == pytest.approx(0.75)
    assert metric_key(mc_ll, MODEL_NAMES[2]) not in metrics  # no benchmark run
    # People's strengths (rounded as the page shows them) and the judge's grades.
    people = results.study_ranking(study=study, voters="people")
    graded = {m["model"]: m for m in grading_results(grading)["models"]}
    for name in MODEL_NAMES:
        m = people.model(name)
        assert metrics[metric_key("human_strength", name)] == pytest.approx(m.strength, abs=0.5)
        assert metrics[metric_key("human_strength_low", name)] == pytest.approx(m.ci_low, abs=0.5)
        assert metrics[metric_key("judge_grade", name)] == pytest.approx(
            graded[name]["mean"], abs=0.005
        )


def test_only_staff_who_may_read_the_leaderboard_may_log_it(tracked, staff_user):
    # staff_user may read results, not benchmark runs: the leaderboard's own rule.
    client = logged_in(staff_user)
    assert client.post(BUTTON, {"query": ""}).status_code == 403


def test_nothing_to_log_is_said_on_the_page(tracked, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("reader", password="reader-pass", is_staff=True)
    wanted = [("annotation", "view_study"), ("annotation", "export_study")]
    wanted.append(("benchmarks", "view_benchmarkrun"))
    user.user_permissions.set(
        Permission.objects.get(content_type__app_label=app, codename=codename)
        for app, codename in wanted
    )
    response = logged_in(user).post(BUTTON, {"query": "study="}, follow=True)
    assert tracking.EMPTY in response.content.decode()
    assert logged_in(user).post(BUTTON, {"query": "dir=sideways"}).status_code == 400
