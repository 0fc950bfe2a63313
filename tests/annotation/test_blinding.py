"""Blinding, the hard rule: nothing an annotator can see or fetch names or identifies a model.

Every annotator-facing page and API response (bodies, headers, cookies, the URLs themselves) is
searched for the models' names, paths and makers, the admin-only study name, and the ids of
models, runs, answers, questions, comparisons and assignments. Ids are pushed to distinctive
seven-digit values first, so a hit cannot be a coincidence like "1".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.db import connection
from django.test import Client

from annotation import gold, studies
from annotation.models import Assignment, Comparison, IdentityFlag, Study, StudyRun, Vote
from generation.models import Answer, GenerationRun, LanguageModel, PromptSet, Question
from generation.registry import language_model_register
from generation.runs import generation_run_create_imported
from judging.models import JudgePrompt, JudgeRun, Judgment

from . import judged
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
JUDGE_ID_BASES = {JudgePrompt: 8_100_000, JudgeRun: 8_200_000, Judgment: 8_300_000}


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
    """Words (names, paths, makers, aliases, labels, templates, served models' URLs and ids,
    answers' provenance) and ids no annotator may see."""
    words = {study.name}
    for model in LanguageModel.objects.all():
        words |= {model.name, model.name_or_path, model.maker, model.display_label}
        words |= set(model.name_or_path.split("/"))
        words |= {*model.aliases, *model.maker_aliases, model.prompt_format}
        words |= {model.endpoint_url, model.endpoint_model, model.api_key_env}
        words |= set(model.endpoint_model.split("/"))
    for revision, prompt in Answer.objects.values_list("model_revision", "prompt_text"):
        words |= {revision, prompt}
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
    # A gold check and a quota are on: nothing in any response may tell a gold pair apart.
    gold.comparisons_mark_gold(
        comparisons=Comparison.objects.filter(study=study).order_by("pk")[:2], expected="a"
    )
    Study.objects.filter(pk=study.pk).update(gold_rate=0.5, quota=8)
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
    # The first pair is skipped (every reason the page offers, and a bad one); it goes to
    # someone else.
    first = rec.get(client, api).json()
    skip_url = f"/api/assignments/{first['token']}/skip/"
    rec.post(client, skip_url, {"reason": "nope"}, content_type="application/json")
    rec.post(client, skip_url, {"reason": "broken"}, content_type="application/json")
    rec.post(client, skip_url, {"reason": "broken"}, content_type="application/json")
    rec.post(client, skip_url, {"reason": "expertise"}, content_type="application/json")
    rec.post(other, skip_url, {"reason": "broken"}, content_type="application/json")
    rec.post(
        client,
        f"/api/assignments/{first['token']}/vote/",
        {"choice": "left"},
        content_type="application/json",
    )
    while True:
        response = rec.get(client, api)
        if response.status_code == 204:
            break
        assert response.status_code == 200
        again = rec.get(client, api)  # a reload
        token = again.json()["token"]
        tokens.append(token)
        vote_url = f"/api/assignments/{token}/vote/"
        choice = ["left", "tie", "tie_bothbad", "right"][len(tokens) % 4]
        rec.post(client, vote_url, {"choice": choice}, content_type="application/json")
        rec.post(client, vote_url, {"choice": choice}, content_type="application/json")
        rec.post(client, vote_url, {"choice": "right"}, content_type="application/json")
        rec.post(
            client,
            vote_url.replace("/vote/", "/skip/"),
            {"reason": "broken"},
            content_type="application/json",
        )
        rec.post(client, vote_url, {"choice": "sideways"}, content_type="application/json")
        rec.post(other, vote_url, {"choice": "left"}, content_type="application/json")
    assert len(tokens) == 8  # the quota (gold checks count too)
    assert Vote.objects.filter(annotator=annotator).count() == 8
    rec.get(client, f"/annotate/{study.pk}/")  # the "no more pairs" state
    rec.get(client, "/annotate/")
    # Staff-only pages and endpoints, as an annotator asks for them.
    for url in [
        "/",
        "/staff/",
        "/staff/compare/",
        f"/staff/compare/?first={study.pk}&second=1",
        "/api/staff/summary/",
        "/api/staff/runs/",
        "/staff/runs/",
        f"/api/studies/compare/?first={study.pk}&second={study.pk}",
        f"/studies/{study.pk}/results/",
    ]:
        rec.get(client, url)
    rec.post(
        client, f"/studies/{study.pk}/annotators/{other_annotator.pk}/exclusion/", {"exclude": "1"}
    )
    rec.post(client, "/i18n/setlang/", {"language": "ja", "next": "/annotate/"})
    rec.get(client, "/annotate/")

    # A pool that leaves the other annotator out: a 404 like any unknown id, saying nothing.
    study.pool_users.add(annotator)
    rec.get(other, f"/annotate/{study.pk}/")
    rec.get(other, api)
    rec.get(other, "/annotate/")

    # Errors: another study that is not open, a non-annotator, an unknown token.
    outsider = django_user_model.objects.create_user("outsider", password="x")
    outsider_client = Client()
    outsider_client.force_login(outsider)
    rec.get(outsider_client, api)
    rec.get(outsider_client, f"/annotate/{study.pk}/")
    rec.post(
        client, "/api/assignments/nope/vote/", {"choice": "left"}, content_type="application/json"
    )
    rec.post(
        client, "/api/assignments/nope/skip/", {"reason": "broken"}, content_type="application/json"
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
        for word in [*words, "gold"]:
            assert word.lower() not in lowered, f"{word!r} leaked in {url}: {text[:300]!r}"
        match = id_pattern.search(text)
        assert match is None, f"id {match.group()} leaked in {url}: {text[:300]!r}"


JUDGE = "owlbadger-judge-v7"


def test_judge_votes_reach_no_annotator_and_take_no_place_of_theirs(
    blinded_study, annotator, tmp_path
):
    """An LLM judge's verdicts on every pair, in both orders: an annotator still gets every
    pair (the judge never counts against K) and nothing they see names the judge."""
    study = blinded_study
    lines = []
    for c in Comparison.objects.filter(study=study).select_related(
        "question", "run_a__model", "run_b__model"
    ):
        names = [c.run_a.model.name, c.run_b.model.name]
        for first, second, winner in [(*names, "model_a"), (*reversed(names), "tie")]:
            record = {"model_a": first, "model_b": second, "winner": winner, "judge": JUDGE}
            record["conversation_a"] = [{"role": "user", "content": c.question.text}]
            lines.append(json.dumps(record, ensure_ascii=False))
    path = tmp_path / "judge.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    call_command("import_votes", str(path), "--study", study.name, "--voters", "judge")
    comparisons = Comparison.objects.filter(study=study)
    assert Vote.objects.filter(comparison__study=study, voter="judge").count() == len(lines)
    assert set(comparisons.values_list("vote_count", flat=True)) == {0}

    rec = Recorder()
    client = Client()
    client.force_login(annotator)
    rec.get(client, "/annotate/")
    rec.get(client, f"/annotate/{study.pk}/")
    api = f"/api/studies/{study.pk}/next/"
    while (response := rec.get(client, api)).status_code == 200:
        token = response.json()["token"]
        rec.post(
            client,
            f"/api/assignments/{token}/vote/",
            {"choice": "left"},
            content_type="application/json",
        )
    rec.get(client, f"/annotate/{study.pk}/")
    # K = 1: the annotator voted on every comparison, the judge's verdicts took none of them.
    assert Vote.objects.filter(annotator=annotator).count() == comparisons.count()
    assert set(comparisons.values_list("vote_count", flat=True)) == {1}

    words, ids = _forbidden(study)
    id_pattern = re.compile(r"(?<!\d)(" + "|".join(str(i) for i in sorted(ids)) + r")(?!\d)")
    for url, text in rec.seen:
        for word in [*words, JUDGE, "owlbadger"]:
            assert word.lower() not in text.lower(), f"{word!r} leaked in {url}"
        assert id_pattern.search(text) is None, f"an id leaked in {url}"


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
    # JSON carries the raw text, and the server's rendering with the tag as text: the page
    # inserts only the rendered fields as HTML.
    assert data["left"].startswith("<script>alert('x')</script>\n回答")
    assert "<script" not in data["left_html"] and "&lt;script&gt;" in data["left_html"]
    assert "<script" not in data["left_diff"] + data["right_diff"]
    assert (
        "<pre><code>print(&#x27;ok&#x27;)" in data["left_html"]
        or "<pre><code>" in data["left_html"]
    )
    script = Path(finders.find("annotation/vote.js")).read_text(encoding="utf-8")
    assigned = re.findall(r"innerHTML = ([^;]+);", script)
    assert assigned == ['html || ""'], assigned  # only setHtml, fed *_html / *_diff fields
    # setAnswer is setHtml for an answer with text, and a text node saying it is empty else.
    assert re.findall(r"set(?:Html|Answer)\(byId\(\"[a-z-]+\"\), data\.(\w+)", script) == [
        "question_html",
        "left_html",
        "right_html",
        "left_diff",
        "right_diff",
    ]


# Served models: what the registry knows of them is staff-only, like a weights model's path.
ENDPOINT_SPECS = [
    {
        "name": "pelicanotter-70b-chat",
        "endpoint_url": "http://pelican-serve.internal:8011/v1",
        "endpoint_model": "pelicorp/pelicanotter-70b-instruct-0613",
        "api_key_env": "PELICORP_SERVE_KEY",
        "maker": "Pelicorp",
        "aliases": ["ペリカンオッター"],
        "maker_aliases": ["ペリコープ"],
        "display_label": "Pelican served",
        "prompt_format": "elyza_llama2",
    },
    {
        "name": "wombatkestrel-8b",
        "endpoint_url": "http://10.9.8.7:8022/v1",
        "endpoint_model": "wombat-kestrel-8b-awq",
        "api_key_env": "",
        "maker": "Wombatic",
        "aliases": ["ウォンバットケストレル"],
        "maker_aliases": [],
        "display_label": "Wombat local",
        "prompt_format": "calm2",
    },
]


def _endpoint_replies(spec: dict, position: int) -> list[str]:
    """Replies to two turns that name the served model every way it can be named."""
    first = (
        f"私は{spec['aliases'][0]}です。{spec['maker']}によって開発されました。"
        f"\nモデル: {spec['endpoint_model']}"
    )
    last = f"<script>alert(1)</script>\n回答{position}: {spec['display_label']} として答えます。"
    return [first, last]


@pytest.fixture
def served_study(make_runs, annotator, settings):
    """A two-turn study of two weights models and two served models, every earlier reply
    naming its model, every answer with provenance."""
    settings.ENDPOINT_ALLOWED_HOSTS = ["pelican-serve.internal", "10.0.0.0/8"]
    for model, base in ID_BASES.items():
        _start_ids_at(model, base)
    built = make_runs(models=2, questions=2, turns=2, answers=_answers, earlier=_earlier)
    runs = list(built.runs)
    questions = list(built.prompt_set.questions.order_by("position"))
    for spec in ENDPOINT_SPECS:
        model = language_model_register(**spec)
        runs.append(
            generation_run_create_imported(
                model=model,
                prompt_set=built.prompt_set,
                answers={q.pk: _endpoint_replies(spec, q.position) for q in questions},
            )
        )
    for run in runs:
        Answer.objects.filter(run=run).update(
            prompt_text=f"[INST] <<SYS>>prompt-of-run-{run.pk}<</SYS>>",
            model_revision=f"rev{run.pk}c0ffee",
            stop_reason="length",
            truncated=True,
        )
    study = studies.study_create(
        name="pelicanotter-vs-wombatkestrel-served",
        runs=runs,
        votes_per_comparison=1,
        instructions="会話全体を比べて、より役に立つ方を選んでください。",
        open_now=True,
    )
    assert not IdentityFlag.objects.filter(study=study, masked=False).exists()
    return study


def _earlier(model_index: int, position: int, turn: int) -> str:
    name, path, maker = MODEL_SPECS[model_index]
    return f"私は{name}です。{maker}によって開発されました。重みは {path} です。"


def test_multi_turn_pages_of_served_models_name_nothing(served_study, annotator):
    study = served_study
    rec = Recorder()
    client = Client()
    client.force_login(annotator)
    rec.get(client, "/annotate/")
    rec.get(client, f"/annotate/{study.pk}/", headers={"accept-language": "ja"})
    rec.get(client, f"/annotate/{study.pk}/")
    api = f"/api/studies/{study.pk}/next/"
    histories = 0
    while (response := rec.get(client, api)).status_code == 200:
        data = rec.get(client, api).json()  # a reload
        assert len(data["history"]) == 1
        histories += 1
        for side in ("left", "right"):
            assert "[…]" in data["history"][0][side]  # every earlier reply named its model
        rec.post(
            client,
            f"/api/assignments/{data['token']}/vote/",
            {"choice": "tie_bothbad"},
            content_type="application/json",
        )
    assert response.status_code == 204
    assert histories == 2 * 6  # questions x model pairs
    rec.get(client, f"/annotate/{study.pk}/")
    for url in [
        f"/studies/{study.pk}/results/",
        f"/studies/{study.pk}/results/download/votes/?provenance=1",
        f"/studies/{study.pk}/results/download/battles/?provenance=1",
        f"/api/studies/{study.pk}/export/battles/?provenance=1",
        f"/api/studies/{study.pk}/results/",
        "/api/staff/summary/",
        "/api/staff/runs/",
        "/staff/runs/",
        "/staff/",
    ]:
        assert rec.get(client, url).status_code in (302, 403, 404)
    for name in ["annotation/vote.js", "annotation/site.css"]:
        rec.seen.append((name, Path(finders.find(name)).read_text(encoding="utf-8")))

    words, ids = _forbidden(study)
    assert {"http://pelican-serve.internal:8011/v1", "wombat-kestrel-8b-awq"} <= words
    assert {"ペリカンオッター", "Pelican served", "elyza_llama2", "PELICORP_SERVE_KEY"} <= words
    id_pattern = re.compile(r"(?<!\d)(" + "|".join(str(i) for i in sorted(ids)) + r")(?!\d)")
    for url, text in rec.seen:
        lowered = text.lower()
        for word in [*words, "pelican", "wombat", "10.9.8.7", "c0ffee", "<<SYS>>"]:
            assert word.lower() not in lowered, f"{word!r} leaked in {url}: {text[:300]!r}"
        match = id_pattern.search(text)
        assert match is None, f"id {match.group()} leaked in {url}: {text[:300]!r}"


def test_the_page_inserts_only_rendered_fields_of_the_history_as_html():
    script = Path(finders.find("annotation/vote.js")).read_text(encoding="utf-8")
    fed = re.findall(r"set(?:Html|Answer)\([^,]+, (\w+)\.(\w+)", script)
    assert fed == [
        ("turn", "question_html"),
        ("turn", "left_html"),
        ("turn", "right_html"),
        ("data", "question_html"),
        ("data", "left_html"),
        ("data", "right_html"),
        ("data", "left_diff"),
        ("data", "right_diff"),
    ]
    template = Path(finders.find("annotation/vote.js")).parent.parent.parent / "templates"
    page = (template / "annotation" / "vote.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "style=" not in page  # the strict CSP: nothing inline


def test_a_judge_run_and_routing_reach_no_annotator(blinded_study, annotator, other_annotator):
    """A judge run over the study (its prompt, verdicts with raw outputs, judge votes) and the
    routing it decided: nothing an annotator sees or fetches names the judge, its prompt or
    anything it wrote, and no id of the judge's rows appears either."""
    for model, base in JUDGE_ID_BASES.items():
        _start_ids_at(model, base)
    study = blinded_study
    ids = list(Comparison.objects.filter(study=study).order_by("pk").values_list("pk", flat=True))
    states = [judged.CONSISTENT_A] * 3 + [judged.CONSISTENT_B] * 2
    states += [judged.INCONSISTENT] * 2 + [judged.UNPARSABLE] * 2
    run = judged.judged_run(study, dict(zip(ids, states, strict=True)))
    assert Judgment.objects.filter(run=run).count() == 18
    assert Vote.objects.filter(comparison__study=study, voter="judge").count() == 14
    # Routing on: the judge's latest run decides at open (round(0.2 x 5) = 1 audited).
    studies.study_close(study=study)
    Study.objects.filter(pk=study.pk).update(routing=True)
    studies.study_open(study=Study.objects.get(pk=study.pk))
    sent = set(
        Comparison.objects.filter(study=study, votes_wanted=None).values_list("pk", flat=True)
    )
    assert len(sent) == 5

    rec = Recorder()
    client, other = Client(), Client()
    client.force_login(annotator)
    other.force_login(other_annotator)
    api = f"/api/studies/{study.pk}/next/"
    for c in (client, other):
        rec.get(c, "/annotate/")
        rec.get(c, f"/annotate/{study.pk}/", headers={"accept-language": "ja"})
    first = rec.get(client, api).json()
    rec.post(
        client,
        f"/api/assignments/{first['token']}/skip/",
        {"reason": "cannot_judge"},
        content_type="application/json",
    )
    handed = []
    for c in (client, other):
        while rec.get(c, api).status_code == 200:
            token = rec.get(c, api).json()["token"]  # a reload
            handed.append(Assignment.objects.get(token=token).comparison_id)
            url = f"/api/assignments/{token}/vote/"
            rec.post(c, url, {"choice": "right"}, content_type="application/json")
            rec.post(c, url, {"choice": "right"}, content_type="application/json")
            rec.post(c, url, {"choice": "left"}, content_type="application/json")  # 409
        rec.get(c, f"/annotate/{study.pk}/")
        rec.get(c, "/annotate/")
    # K = 1: the annotator votes on the 4 they did not skip, the other one on the skipped one.
    assert sorted(handed) == sorted(sent)
    for name in ["annotation/vote.js", "annotation/site.css"]:
        rec.seen.append((name, Path(finders.find(name)).read_text(encoding="utf-8")))

    words, ids = _forbidden(study)
    prompt = run.prompt
    words |= {judged.JUDGE_NAME, "owlbadger", judged.PROMPT_NAME, "heronquill", judged.RAW_MARK}
    words |= {run.judge.name_or_path, str(prompt), prompt.system_prompt, prompt.template}
    for raw, prompt_text in Judgment.objects.filter(run=run).values_list(
        "raw_output", "prompt_text"
    ):
        words |= {raw, prompt_text, raw.splitlines()[0]}
    ids |= {run.pk, prompt.pk, *Judgment.objects.filter(run=run).values_list("pk", flat=True)}
    id_pattern = re.compile(r"(?<!\d)(" + "|".join(str(i) for i in sorted(ids)) + r")(?!\d)")
    for url, text in rec.seen:
        lowered = text.lower()
        for word in words:
            assert word.lower() not in lowered, f"{word!r} leaked in {url}: {text[:300]!r}"
        match = id_pattern.search(text)
        assert match is None, f"id {match.group()} leaked in {url}: {text[:300]!r}"
