"""Blinding, the hard rule: nothing an annotator can see or fetch names or identifies a model.

Every annotator-facing page and API response (bodies, headers, cookies, the URLs themselves) is
searched for the models' names, paths and makers, the admin-only study name, and the ids of
models, runs, answers, questions, comparisons and assignments. Ids are pushed to distinctive
seven-digit values first, so a hit cannot be a coincidence like "1".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client

from annotation import studies
from annotation.models import Assignment, Comparison, IdentityFlag, Study, StudyRun, Vote
from generation.models import Answer, GenerationRun, LanguageModel, PromptSet, Question

from .conftest import MODEL_SPECS

pytestmark = pytest.mark.django_db

ID_BASES = {
    LanguageModel: 7_100_000,
    PromptSet: 7_200_000,
    Question: 7_300_000,
    GenerationRun: 7_400_000,
    Answer: 7_500_000,
    Comparison: 7_600_000,
    Assignment: 7_700_000,
    Vote: 7_800_000,
    StudyRun: 7_900_000,
    IdentityFlag: 8_000_000,
}


def _start_ids_at(model, value: int) -> None:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, value])
        elif connection.vendor == "sqlite":
            # Django's SQLite AutoFields are AUTOINCREMENT: sqlite_sequence holds the last id.
            cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = %s", [value, table])
            if cursor.rowcount == 0:
                cursor.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, value]
                )
        else:
            pytest.skip(f"no id bump for {connection.vendor}")


def _answers(model_index: int, position: int) -> str:
    if position == 1:
        name, path, maker = MODEL_SPECS[model_index]
        return f"私は{name}です。{maker}によって開発されました。\n重みは {path} にあります。"
    return f"<script>alert('x')</script>\n回答{model_index}-{position}\n```\nprint('ok')\n```"


class Recorder:
    """Everything an annotator's browser could see: URLs, status, headers, cookies, bodies."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def record(self, url: str, response) -> None:
        self.seen.append((url, f"URL {url}"))
        self.seen.append((url, f"STATUS {response.status_code}"))
        for header, value in response.items():
            self.seen.append((url, f"HEADER {header}: {value}"))
        for morsel in response.cookies.values():
            self.seen.append((url, f"COOKIE {morsel.OutputString()}"))
        if getattr(response, "streaming", False):
            body = b"".join(response.streaming_content)
        else:
            body = response.content
        self.seen.append((url, body.decode("utf-8", errors="replace")))

    def get(self, client: Client, url: str, **kwargs):
        response = client.get(url, **kwargs)
        self.record(url, response)
        return response

    def post(self, client: Client, url: str, data, **kwargs):
        response = client.post(url, data, **kwargs)
        self.record(url, response)
        return response


def _forbidden(study: Study) -> tuple[set[str], set[int]]:
    words = {study.name}
    for model in LanguageModel.objects.all():
        words |= {model.name, model.name_or_path, model.maker}
        words |= set(model.name_or_path.split("/"))
    ids = set()
    for model in ID_BASES:
        ids |= set(model.objects.values_list("pk", flat=True))
    return {w for w in words if w}, ids


@pytest.fixture
def blinded_study(make_runs, annotator):
    for model, base in ID_BASES.items():
        _start_ids_at(model, base)
    built = make_runs(models=3, questions=3, answers=_answers)
    study = studies.study_create(
        # Admins name studies after their models; annotators must never see that name.
        name="zebrafalcon-vs-quokkaraven-vs-marmotheron",
        runs=built.runs,
        votes_per_comparison=1,
        instructions="より役に立つ回答を選んでください。",
        open_now=True,
    )
    # Opening the study masked every flag; no admin has to remember to.
    assert not IdentityFlag.objects.filter(study=study, masked=False).exists()
    return study


def test_no_annotator_facing_response_names_or_identifies_a_model(
    blinded_study, annotator, other_annotator, django_user_model
):
    study = blinded_study
    rec = Recorder()
    anonymous = Client()
    rec.get(anonymous, "/")
    rec.get(anonymous, "/annotate/")
    rec.get(anonymous, "/accounts/login/?next=/annotate/")
    client = Client()
    rec.post(
        client,
        "/accounts/login/",
        {"username": "annotator", "password": "annotator-pass", "next": "/annotate/"},
    )
    other = Client()
    other.force_login(other_annotator)
    rec.get(client, "/annotate/")
    rec.get(client, f"/annotate/{study.pk}/", headers={"accept-language": "ja"})
    rec.get(client, f"/annotate/{study.pk}/")

    api = f"/api/studies/{study.pk}/next/"
    tokens = []
    while True:
        response = rec.get(client, api)
        if response.status_code == 204:
            break
        assert response.status_code == 200
        again = rec.get(client, api)  # a reload
        token = again.json()["token"]
        tokens.append(token)
        vote_url = f"/api/assignments/{token}/vote/"
        rec.post(client, vote_url, {"choice": "left"}, content_type="application/json")
        rec.post(client, vote_url, {"choice": "left"}, content_type="application/json")
        rec.post(client, vote_url, {"choice": "right"}, content_type="application/json")
        rec.post(client, vote_url, {"choice": "sideways"}, content_type="application/json")
        rec.post(other, vote_url, {"choice": "left"}, content_type="application/json")
    assert len(tokens) == 9
    rec.get(client, f"/annotate/{study.pk}/")  # the "no more pairs" state
    rec.get(client, "/annotate/")

    # Errors: another study that is not open, a non-annotator, an unknown token.
    outsider = django_user_model.objects.create_user("outsider", password="x")
    outsider_client = Client()
    outsider_client.force_login(outsider)
    rec.get(outsider_client, api)
    rec.get(outsider_client, f"/annotate/{study.pk}/")
    rec.post(
        client, "/api/assignments/nope/vote/", {"choice": "left"}, content_type="application/json"
    )
    studies.study_close(study=study)
    rec.get(client, api)
    rec.get(client, f"/annotate/{study.pk}/")
    rec.post(
        client,
        f"/api/assignments/{tokens[0]}/vote/",
        {"choice": "left"},
        content_type="application/json",
    )

    # The static files the pages load.
    for name in ["annotation/vote.js", "annotation/site.css"]:
        rec.seen.append((name, Path(finders.find(name)).read_text(encoding="utf-8")))

    words, ids = _forbidden(study)
    assert ids and len(words) >= 10
    id_pattern = re.compile(r"(?<!\d)(" + "|".join(str(i) for i in sorted(ids)) + r")(?!\d)")
    for url, text in rec.seen:
        lowered = text.lower()
        for word in words:
            assert word.lower() not in lowered, f"{word!r} leaked in {url}: {text[:300]!r}"
        match = id_pattern.search(text)
        assert match is None, f"id {match.group()} leaked in {url}: {text[:300]!r}"


def test_masked_self_introductions_never_reach_the_annotator(blinded_study, annotator):
    client = Client()
    client.force_login(annotator)
    seen = []
    while (response := client.get(f"/api/studies/{blinded_study.pk}/next/")).status_code == 200:
        data = response.json()
        seen.append(data["left"] + data["right"])
        client.post(
            f"/api/assignments/{data['token']}/vote/",
            {"choice": "tie"},
            content_type="application/json",
        )
    assert len(seen) == 9
    masked = [s for s in seen if "[…]" in s]
    assert len(masked) == 3  # the three comparisons of question 1
    assert all("私は" not in s and "開発" not in s for s in masked)


def test_answers_are_sent_as_text_for_the_page_to_escape(blinded_study, annotator):
    client = Client()
    client.force_login(annotator)
    data = client.get(f"/api/studies/{blinded_study.pk}/next/").json()
    while "<script>" not in data["left"]:
        client.post(
            f"/api/assignments/{data['token']}/vote/",
            {"choice": "tie"},
            content_type="application/json",
        )
        data = client.get(f"/api/studies/{blinded_study.pk}/next/").json()
    # JSON carries the raw text; the page sets it with textContent, never innerHTML.
    assert data["left"].startswith("<script>alert('x')</script>\n回答")
    script = Path(finders.find("annotation/vote.js")).read_text(encoding="utf-8")
    assert "innerHTML" not in script.replace("never innerHTML", "")
    assert "textContent" in script
