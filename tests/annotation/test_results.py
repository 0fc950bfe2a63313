"""Results: exports checked against counts made by hand, vote import both ways, real Rakuda data."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from annotation import exchange, plots, results, results_export
from annotation.battles import rakuda_tournament_to_battles, write_battles
from annotation.models import Assignment, Comparison, Study, Vote

pytestmark = pytest.mark.django_db

RAKUDA = "rakuda/hist_ea2b4dc/jrank"


def _vote_until_done(client, user, study, choose) -> list[tuple[str, str, str]]:
    """Vote through the HTTP API until nothing is left; returns (token, choice, left model)."""
    client.force_login(user)
    cast = []
    while True:
        response = client.get(f"/api/studies/{study.pk}/next/")
        if response.status_code == 204:
            return cast
        token = response.json()["token"]
        choice = choose(len(cast))
        voted = client.post(
            f"/api/assignments/{token}/vote/", {"choice": choice}, content_type="application/json"
        )
        assert voted.status_code in (200, 201), voted.content
        cast.append((token, choice))


def _hand_counts(study) -> dict[tuple[str, str], Counter]:
    """Per canonical pair: wins / ties / losses of model_a, from the stored shown choices."""
    counts: dict[tuple[str, str], Counter] = {}
    for vote in Vote.objects.filter(comparison__study=study).select_related(
        "assignment", "comparison__run_a__model", "comparison__run_b__model"
    ):
        c = vote.comparison
        pair = (c.run_a.model.name, c.run_b.model.name)
        left_is_a = vote.assignment.left == "a"
        if vote.shown == "tie":
            result = "ties"
        elif (vote.shown == "left") == left_is_a:
            result = "wins"
        else:
            result = "losses"
        counts.setdefault(pair, Counter())[result] += 1
    return counts


def test_exports_agree_with_counts_made_by_hand(client, annotator, other_annotator, make_study):
    study = make_study(models=3, questions=6, k=2)
    pattern = ["left", "right", "tie", "left", "left"]
    _vote_until_done(client, annotator, study, lambda i: pattern[i % 5])
    _vote_until_done(client, other_annotator, study, lambda i: pattern[(i + 2) % 5])
    assert Vote.objects.filter(comparison__study=study).count() == 3 * 6 * 2
    expected = _hand_counts(study)

    body = json.loads(results_export.export(study=study, fmt="json")[0])
    assert body["study"] == study.name
    assert len(body["pairs"]) == 3
    for pair in body["pairs"]:
        hand = expected[(pair["model_a"], pair["model_b"])]
        assert (pair["wins"], pair["ties"], pair["losses"]) == (
            hand["wins"],
            hand["ties"],
            hand["losses"],
        )
        games = sum(hand.values())
        assert pair["win_pct"] == pytest.approx(100 * hand["wins"] / games)
        assert pair["tie_pct"] == pytest.approx(100 * hand["ties"] / games)
        assert pair["loss_pct"] == pytest.approx(100 * hand["losses"] / games)
    per_model: dict[str, Counter] = {}
    for (a, b), hand in expected.items():
        per_model.setdefault(a, Counter()).update(hand)
        per_model.setdefault(b, Counter()).update(
            {"wins": hand["losses"], "ties": hand["ties"], "losses": hand["wins"]}
        )
    for model in body["models"]:
        hand = per_model[model["name"]]
        assert (model["wins"], model["ties"], model["losses"]) == (
            hand["wins"],
            hand["ties"],
            hand["losses"],
        )
        games = sum(hand.values())
        assert model["win_rate"] == pytest.approx((hand["wins"] + hand["ties"] / 2) / games)
        assert model["ci_low"] <= model["strength"] <= model["ci_high"]
    assert sum(m["strength"] for m in body["models"]) / 3 == pytest.approx(1000, abs=1e-6)

    table = list(csv.DictReader(io.StringIO(results_export.export(study=study, fmt="csv")[0])))
    for row in table:
        hand = expected[(row["model_a"], row["model_b"])]
        assert (int(row["wins"]), int(row["ties"]), int(row["losses"])) == (
            hand["wins"],
            hand["ties"],
            hand["losses"],
        )

    markdown = results_export.export(study=study, fmt="md")[0]
    for (a, b), hand in expected.items():
        games = sum(hand.values())
        pcts = [round(100 * hand[k] / games) for k in ("wins", "ties", "losses")]
        line = next(x for x in markdown.splitlines() if f"{a} v.s. {b}" in x)
        cells = [c.strip().rstrip("%") for c in line.strip("|").split("|")[1:]]
        # Whole percentages that add up to 100 may move one point from the plain rounding.
        assert all(abs(int(c) - p) <= 1 for c, p in zip(cells, pcts, strict=True)), line
        assert sum(int(c) for c in cells) == 100

    raw = list(csv.DictReader(io.StringIO(results_export.export(study=study, fmt="votes")[0])))
    assert len(raw) == 36
    assert {r["annotator_id"] for r in raw} == {str(annotator.pk), str(other_annotator.pk)}
    assert all(float(r["seconds"]) >= 0 and r["shown"] in ("left", "tie", "right") for r in raw)
    assert all(r["left_model"] in (r["model_a"], r["model_b"]) for r in raw)


def test_the_command_writes_each_format(tmp_path, client, annotator, make_study):
    study = make_study(models=2, questions=3, k=1)
    _vote_until_done(client, annotator, study, lambda i: "left")
    for fmt in results_export.EXPORT_FORMATS:
        out = tmp_path / f"out.{fmt}"
        call_command("export_results", study.name, "--format", fmt, "--out", str(out))
        assert out.read_text(encoding="utf-8").strip(), fmt
    with pytest.raises(CommandError, match="no study named"):
        call_command("export_results", "missing", "--format", "json")


def _oriented(pairs: list[dict]) -> dict:
    """Pair counts keyed by the two names in sorted order, from the first name's side."""
    out = {}
    for p in pairs:
        if p["model_a"] < p["model_b"]:
            out[(p["model_a"], p["model_b"])] = (p["wins"], p["ties"], p["losses"])
        else:
            out[(p["model_b"], p["model_a"])] = (p["losses"], p["ties"], p["wins"])
    return out


def test_battles_round_trip_into_a_new_study(tmp_path, client, annotator, make_study):
    study = make_study(models=3, questions=4, k=1)
    _vote_until_done(client, annotator, study, lambda i: ["left", "tie", "right"][i % 3])
    original = json.loads(results_export.export(study=study, fmt="json")[0])
    path = tmp_path / "battles.jsonl"
    path.write_text(results_export.export(study=study, fmt="battles")[0], encoding="utf-8")

    call_command("import_votes", str(path), "--study", "copy")
    copy = Study.objects.get(name="copy")
    assert Vote.objects.filter(comparison__study=copy, imported=True).count() == 12
    again = json.loads(results_export.export(study=copy, fmt="json")[0])
    assert _oriented(again["pairs"]) == _oriented(original["pairs"])
    assert sorted((m["name"], m["wins"], m["ties"]) for m in again["models"]) == sorted(
        (m["name"], m["wins"], m["ties"]) for m in original["models"]
    )
    # Importing the same file into the existing study again adds nothing: imports are idempotent.
    call_command("import_votes", str(path), "--study", "copy")
    assert Vote.objects.filter(comparison__study=copy).count() == 12


def test_a_bad_vote_file_names_the_line_and_changes_nothing(tmp_path, make_study):
    study = make_study(models=2, questions=2, k=1)
    names = [m.name for m in study.built.models]
    question = study.prompt_set.questions.first()
    good = {"model_a": names[0], "model_b": names[1], "winner": "tie", "question_id": None}
    good["conversation_a"] = [{"role": "user", "content": question.text}]
    lines = [
        json.dumps(good),
        json.dumps({**good, "model_b": "stranger-model"}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = Vote.objects.count()
    with pytest.raises(CommandError) as caught:
        call_command("import_votes", str(path), "--study", study.name)
    assert "line 2: model 'stranger-model' is not in study" in str(caught.value)
    assert Vote.objects.count() == before

    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"bad\.jsonl, line 2: not valid JSON"):
        call_command("import_votes", str(path), "--study", study.name)
    unknown = {**good, "conversation_a": [{"role": "user", "content": "見たことのない質問"}]}
    path.write_text(json.dumps(unknown) + "\n", encoding="utf-8")
    with pytest.raises(CommandError, match="line 1: question .* is not in study"):
        call_command("import_votes", str(path), "--study", study.name)
    assert Vote.objects.count() == before


def test_imported_votes_are_told_apart_from_app_votes(client, annotator, make_study):
    study = make_study(models=2, questions=2, k=2)
    _vote_until_done(client, annotator, study, lambda i: "left")
    comparison = Comparison.objects.filter(study=study).first()
    record = {
        "model_a": comparison.run_a.model.name,
        "model_b": comparison.run_b.model.name,
        "winner": "model_b",
        "judge": "gpt-4",
        "conversation_a": [{"role": "user", "content": comparison.question.text}],
    }
    summary = exchange.votes_import(
        data=(json.dumps(record) + "\n").encode(), filename="x.jsonl", study_name=study.name
    )
    assert summary.votes == 1 and not summary.created_study
    imported = Vote.objects.get(comparison__study=study, imported=True)
    assert (imported.judge, imported.outcome, imported.assignment) == ("gpt-4", "b", None)
    assert Vote.objects.filter(comparison__study=study, imported=False).count() == 2
    # Imported votes count towards K like any other.
    comparison.refresh_from_db()
    assert comparison.vote_count == comparison.votes.count() == 2
    # The other comparison's kept count still matches its votes.
    for other in Comparison.objects.filter(study=study).exclude(pk=comparison.pk):
        assert other.vote_count == other.votes.count()


def test_rakuda_gpt4_tournament_imports_and_reproduces_the_published_win_rates(
    tmp_path, external_data
):
    base = external_data / RAKUDA
    records = rakuda_tournament_to_battles(base / "tournaments" / "rakuda_v1_gpt4.jsonl")
    path = tmp_path / "rakuda_battles.jsonl"
    path.write_text(write_battles(records), encoding="utf-8")

    call_command("import_votes", str(path), "--study", "rakuda v1 gpt-4")
    study = Study.objects.get(name="rakuda v1 gpt-4")
    assert study.prompt_set.questions.count() == 40
    assert Vote.objects.filter(comparison__study=study, imported=True).count() == 800

    out = tmp_path / "rakuda.json"
    call_command("export_results", study.name, "--format", "json", "--out", str(out))
    ours = {m["name"]: m for m in json.loads(out.read_text(encoding="utf-8"))["models"]}
    published = json.loads((base / "rankings" / "rakuda_v1_gpt4.json").read_text("utf-8"))
    published = published["ranking"]
    assert set(ours) == {p["model_id"] for p in published}
    for entry in published:
        assert round(ours[entry["model_id"]]["win_rate"], 4) == round(entry["win_rate"], 4)
    theirs = [p["model_id"] for p in sorted(published, key=lambda p: -p["median"])]
    assert sorted(ours, key=lambda name: -ours[name]["strength"]) == theirs


def test_staff_see_the_results_page_chart_and_downloads(client, staff_user, annotator, make_study):
    study = make_study(models=3, questions=4, k=1)
    _vote_until_done(client, annotator, study, lambda i: ["left", "tie", "right", "left"][i % 4])
    client.force_login(staff_user)
    page = client.get(f"/studies/{study.pk}/results/")
    assert page.status_code == 200
    body = page.content.decode()
    for model in study.built.models:
        assert model.name in body
    assert "v.s." in body and "Krippendorff" in body and "binomial" in body
    png = client.get(f"/studies/{study.pk}/results/strength.png")
    assert png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    svg = client.get(f"/studies/{study.pk}/results/strength.svg?method=davidson")
    assert svg["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content
    assert client.get(f"/studies/{study.pk}/results/?method=nonsense").status_code == 400
    download = client.get(f"/studies/{study.pk}/results/download/md/")
    assert "attachment" in download["Content-Disposition"]
    assert "| Model pair | Win | Tie | Loss |" in download.content.decode()


def test_the_results_page_and_the_chart_it_embeds_share_one_fit(
    client, staff_user, annotator, make_study
):
    study = make_study(models=3, questions=4, k=1)
    _vote_until_done(client, annotator, study, lambda i: ["left", "tie", "right"][i % 3])
    client.force_login(staff_user)
    options = results.fit_options(method="davidson")
    key = results.fit_cache_key(study=study, options=options)
    assert key != results.fit_cache_key(study=study, options=results.fit_options())
    assert cache.get(key) is None

    assert client.get(f"/studies/{study.pk}/results/?method=davidson").status_code == 200

    fitted = cache.get(key).main
    assert (fitted.method, fitted.n_votes, fitted.bootstrap) == ("davidson", 12, 1000)
    # Mark the cached fit: a chart drawn from it, not from a fit of its own, carries the mark.
    marked = dataclasses.replace(
        fitted, models=[dataclasses.replace(m, name=f"cached {m.name}") for m in fitted.models]
    )
    cache.set(key, results.StudyFit(main=marked))
    svg = client.get(f"/studies/{study.pk}/results/strength.svg?method=davidson")
    assert svg.content == plots.strength_chart(marked, fmt="svg", title=study.name)

    # Other votes are another key: the chart fits them itself and caches that fit.
    Vote.objects.filter(comparison__study=study).latest("pk").delete()
    fresh_key = results.fit_cache_key(study=study, options=options)
    assert fresh_key != key and cache.get(fresh_key) is None
    svg = client.get(f"/studies/{study.pk}/results/strength.svg?method=davidson")
    refitted = cache.get(fresh_key).main
    assert refitted.n_votes == 11
    assert svg.content == plots.strength_chart(refitted, fmt="svg", title=study.name)


def test_the_results_api_and_exports(client, staff_user, annotator, make_study):
    study = make_study(models=2, questions=5, k=1)
    _vote_until_done(client, annotator, study, lambda i: "left")
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/?position=1").json()
    assert body["study"] == study.name and body["n_votes"] == 5
    assert {"name", "strength", "ci_low", "ci_high", "log_strength", "win_rate"} <= set(
        body["models"][0]
    )
    assert body["ranking"]["position_advantage_elo"] is not None
    for fmt in ("csv", "json", "md", "battles", "votes"):
        response = client.get(f"/api/studies/{study.pk}/export/{fmt}/")
        assert response.status_code == 200, fmt
        assert response.content.strip(), fmt
    assert client.get(f"/api/studies/{study.pk}/export/xlsx/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/studies/{id}/results/",
        "/studies/{id}/results/strength.png",
        "/studies/{id}/results/download/votes/",
        "/api/studies/{id}/results/",
        "/api/studies/{id}/export/votes/",
        "/api/studies/{id}/export/battles/",
    ],
)
def test_results_and_exports_are_for_staff_only(client, annotator, make_study, path):
    study = make_study(models=2, questions=2, k=1)
    url = path.format(id=study.pk)
    anonymous = client.get(url)
    assert anonymous.status_code in (302, 401, 403)
    if anonymous.status_code == 302:
        assert "login" in anonymous["Location"]
    client.force_login(annotator)
    refused = client.get(url)
    assert refused.status_code in (302, 403)
    if refused.status_code == 302:
        assert "login" in refused["Location"]


def test_two_studies_over_the_same_models_are_compared(
    tmp_path, client, annotator, other_annotator, make_study
):
    human = make_study(models=3, questions=6, k=1)
    # Votes that order the models strictly: the earlier-registered model always wins.
    rank = {m.pk: i for i, m in enumerate(human.built.models)}
    client.force_login(annotator)
    while (response := client.get(f"/api/studies/{human.pk}/next/")).status_code == 200:
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
    path = tmp_path / "judge.jsonl"
    path.write_text(results_export.export(study=human, fmt="battles")[0], encoding="utf-8")
    call_command("import_votes", str(path), "--study", "judge copy")
    judge = Study.objects.get(name="judge copy")

    compared = results.studies_compare(first=human, second=judge)
    assert sorted(compared["models"]) == sorted(m.name for m in human.built.models)
    assert compared["kendall_tau"] == pytest.approx(1.0)
    assert len(compared["pairs"]) == 3
    for pair in compared["pairs"]:
        assert pair["win_rate_first"] == pytest.approx(pair["win_rate_second"])
        assert pair["games_first"] == pair["games_second"] == 6

    call_command("compare_studies", human.name, "judge copy")
    with pytest.raises(CommandError, match="no study named"):
        call_command("compare_studies", human.name, "missing")
