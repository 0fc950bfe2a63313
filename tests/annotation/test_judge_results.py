"""The judge's part of the results: each judge run's counts, and for a routing study the human
votes saved and the audit agreement, the same on the results page, in the results API and in
the JSON export."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client

from annotation import studies
from annotation.models import Assignment, Comparison, Study
from judging import routing

from .judged import CONSISTENT_A, CONSISTENT_B, INCONSISTENT, JUDGE_NAME, PROMPT_NAME, judged_run

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

K = 2
ROUTING_KEYS = {"audited", "settled_by_judge", "sent_to_people", "human_votes_saved"}
ROUTING_KEYS |= {"audit_agreement"}


@pytest.fixture
def routed(make_study, annotator, other_annotator):
    """Two models x 5 questions, K = 2, routing: the judge is consistent on 4 comparisons (1 of
    them audited: round(0.8)) and inconsistent on 1; two annotators vote on what they are
    given, always for answer a."""
    study = make_study(models=2, questions=5, k=K, open_now=False)
    Study.objects.filter(pk=study.pk).update(routing=True)
    ids = list(Comparison.objects.filter(study=study).order_by("pk").values_list("pk", flat=True))
    verdicts = dict(
        zip(
            ids, [CONSISTENT_A, CONSISTENT_A, CONSISTENT_B, CONSISTENT_B, INCONSISTENT], strict=True
        )
    )
    run = judged_run(study, verdicts)
    routing.route_after_judge_run(run.pk)
    study = studies.study_open(study=Study.objects.get(pk=study.pk))
    for user in (annotator, other_annotator):
        client = Client()
        client.force_login(user)
        while (response := client.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
            token = response.json()["token"]
            left = Assignment.objects.get(token=token).left
            choice = "left" if left == "a" else "right"
            client.post(
                f"/api/assignments/{token}/vote/",
                {"choice": choice},
                content_type="application/json",
            )
    study.verdicts = verdicts
    study.run = run
    return study


def _expected_audit_agreement(study) -> tuple[int, int]:
    """(compared, agreed) on the audit sample: people always chose a."""
    audited = routing.study_plan(study=study, run=study.run).audited
    assert len(audited) == 1
    (pk,) = audited
    return 1, int(study.verdicts[pk][0] == "a")


def test_the_results_api_and_the_json_export_give_judge_runs_and_routing(
    routed, staff_user, tmp_path
):
    study = routed
    client = Client()
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/").json()
    (run,) = body["judge_runs"]
    assert run["id"] == study.run.pk
    assert run["judge"] == JUDGE_NAME and run["prompt"].startswith(PROMPT_NAME)
    assert (run["judged"], run["expected"]) == (5, 5)
    assert (run["consistent"], run["inconsistent"], run["unparsable"]) == (4, 1, 0)
    assert run["votes"] == 10  # both orders of each; the inconsistent one counts as a tie

    found = body["routing"]
    assert set(found) >= ROUTING_KEYS
    assert found["judge_run"] == study.run.pk
    assert (found["audited"], found["settled_by_judge"], found["sent_to_people"]) == (1, 3, 2)
    assert found["human_votes_saved"] == K * 5 - K * 2
    compared, agreed = _expected_audit_agreement(study)
    assert found["audit_agreement"]["compared"] == compared
    assert found["audit_agreement"]["agreed"] == agreed
    # People and the judge on every comparison both judged: the audited one and the
    # inconsistent one (a tie for the judge, a win of a for people).
    assert body["judge_agreement"]["compared"] == 2

    # The same from the judge's votes only: the judge's part does not depend on ?voters=.
    judge_side = client.get(f"/api/studies/{study.pk}/results/?voters=judge").json()
    assert judge_side["routing"] == found and judge_side["judge_runs"] == body["judge_runs"]

    out = tmp_path / "results.json"
    call_command(
        "export_results", study.name, "--format", "json", "--bootstrap", "0", "--out", str(out)
    )
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["routing"] == found
    assert exported["judge_runs"] == body["judge_runs"]


def test_the_results_page_shows_the_judge_runs_and_the_human_votes_saved(routed, staff_user):
    study = routed
    client = Client()
    client.force_login(staff_user)
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    section = page[page.index('id="llm-judge"') :]
    assert JUDGE_NAME in section and PROMPT_NAME in section
    assert "Human votes saved" in section
    saved = K * 5 - K * 2
    assert f"<strong>{saved}</strong> / {K * 5}" in section
    assert 'id="audit-agreement"' in section
    assert "Settled by the judge" in section


def test_a_study_that_does_not_route_has_judge_runs_and_no_routing(make_study, staff_user):
    study = make_study(models=2, questions=3, k=1)
    ids = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    judged_run(study, dict.fromkeys(ids, CONSISTENT_B))
    client = Client()
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/").json()
    assert body["routing"] is None
    assert [r["consistent"] for r in body["judge_runs"]] == [3]
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert 'id="llm-judge"' in page and 'id="routing"' not in page


def test_a_study_without_a_judge_shows_no_judge_section(make_study, staff_user):
    study = make_study(models=2, questions=2, k=1)
    client = Client()
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/").json()
    assert body["judge_runs"] == [] and body["routing"] is None
    assert 'id="llm-judge"' not in client.get(f"/studies/{study.pk}/results/").content.decode()
