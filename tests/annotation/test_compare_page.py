"""The comparison of two studies as a staff page, each side read for its voters: the page, the
API and ``compare_studies`` give the same figures (one implementation,
``results.studies_compare``)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client

from annotation import results
from annotation.models import Assignment, Comparison

from .judged import CONSISTENT_B, judged_run

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def both_voted(make_study, annotator):
    """3 models x 4 questions, K = 1. People always prefer the earlier-registered model; the
    judge (both orders, consistent) always the later one: the two orders are reversed."""
    study = make_study(models=3, questions=4, k=1)
    rank = {m.pk: i for i, m in enumerate(study.built.models)}
    client = Client()
    client.force_login(annotator)
    while (response := client.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
        token = response.json()["token"]
        assignment = Assignment.objects.select_related(
            "comparison__run_a", "comparison__run_b"
        ).get(token=token)
        c = assignment.comparison
        a_wins = rank[c.run_a.model_id] < rank[c.run_b.model_id]
        choice = "left" if a_wins == (assignment.left == "a") else "right"
        client.post(
            f"/api/assignments/{token}/vote/", {"choice": choice}, content_type="application/json"
        )
    ids = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    judged_run(study, dict.fromkeys(ids, CONSISTENT_B))
    return study


def test_the_page_compares_people_with_the_judge_as_the_command_and_the_api_do(
    both_voted, staff_user, capsys
):
    study = both_voted
    expected = results.studies_compare(first=study, second=study, voters=("people", "judge"))
    assert expected["kendall_tau"] == pytest.approx(-1.0)
    client = Client()
    client.force_login(staff_user)
    query = f"first={study.pk}&second={study.pk}&voters_first=people&voters_second=judge"
    response = client.get(f"/staff/compare/?{query}")
    assert response.status_code == 200
    assert response.context["compared"] == expected
    page = response.content.decode()
    assert '<span class="muted" id="voters-first">(people)</span>' in page
    assert '<span class="muted" id="voters-second">(judge)</span>' in page
    assert "<strong>-1.000</strong>" in page
    for side in ("first", "second"):
        chosen = "people" if side == "first" else "judge"
        assert f'name="voters_{side}"' in page
        assert f'<option value="{chosen}" selected>' in page.split(f'name="voters_{side}"')[1]

    api = client.get(f"/api/studies/compare/?{query}").json()
    assert api == json.loads(json.dumps(expected))
    call_command("compare_studies", study.name, study.name, "--voters-second", "judge", "--json")
    assert json.loads(capsys.readouterr().out) == api

    # People on both sides agree with themselves.
    same = client.get(f"/staff/compare/?first={study.pk}&second={study.pk}")
    assert same.context["compared"]["kendall_tau"] == pytest.approx(1.0)
    assert same.context["compared"]["voters_second"] == "people"


def test_bad_voters_or_no_votes_are_said_plainly(make_study, staff_user):
    study = make_study(models=2, questions=2, k=1)
    client = Client()
    client.force_login(staff_user)
    bad = client.get(f"/staff/compare/?first={study.pk}&second={study.pk}&voters_first=robots")
    assert bad.status_code == 200 and bad.context["compared"] is None
    assert "Choose people, the LLM judge or both" in bad.content.decode()
    api = client.get(f"/api/studies/compare/?first={study.pk}&second={study.pk}&voters_first=x")
    assert api.status_code == 400
    empty = client.get(f"/staff/compare/?first={study.pk}&second={study.pk}&voters_second=judge")
    assert empty.context["error"] == results.NO_VOTES_TO_COMPARE.format(
        name=study.name, voters="people"
    )


def test_the_page_is_for_staff_who_may_read_results(make_study, annotator, bare_staff):
    study = make_study(models=2, questions=2, k=1)
    url = f"/staff/compare/?first={study.pk}&second={study.pk}&voters_second=judge"
    for user in (annotator, bare_staff):
        client = Client()
        client.force_login(user)
        assert client.get(url).status_code in (302, 403)
