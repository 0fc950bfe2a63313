"""Real data nobody here wrote: Rakuda's GPT-4-judged tournaments (jrank, commits ea2b4dc and
941deef), read directly and imported through ``import_votes``.

What the published ranking file means, learnt from the files themselves:

- The tournament is one JSON object; its 800 ``matches`` each name ``model1_id`` /
  ``model2_id`` (both orders occur, 72 ordered pairs of 9 models, 40 questions) and a ``score``:
  1 first model won, 2 second won, 3 tie (here 356 / 370 / 74; no -1 "unparsable" scores, which
  we drop, so in this file that convention changes nothing).
- ``win_rate`` in the ranking file is (wins + ties / 2) / games per model, where games counts
  every judged match the model played, in either position. That is exactly our convention
  (a tie is half a win for each side), so the rates match to floating-point precision.
- ``median`` is their Bradley-Terry strength on the 400-per-factor-of-10 scale around 1000 (a
  posterior median, not our maximum-likelihood fit); we reproduce their order, and the values
  to within a few tens of points.
- Their maximum-likelihood fit (with a first-position advantage) is reproduced to 0.05 Elo by
  our position fit once the import keeps model1 as the answer shown first.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import choix
import numpy as np
import pytest
from django.core.management import call_command

from annotation import results
from annotation.battles import rakuda_tournament_to_battles
from annotation.models import Study, Vote
from annotation.ranking import rank

JRANK = "rakuda/hist_ea2b4dc/jrank"


@pytest.fixture(scope="module")
def rakuda(external_data):
    base = external_data / JRANK
    tournament = base / "tournaments" / "rakuda_v1_gpt4.jsonl"
    published = base / "rankings" / "rakuda_v1_gpt4.json"
    if not tournament.is_file() or not published.is_file():
        pytest.skip(f"Rakuda files not found under {base}")
    raw = json.loads(tournament.read_text(encoding="utf-8"))
    records = rakuda_tournament_to_battles(tournament)
    ranking = rank([r.to_battle() for r in records], bootstrap=200, seed=0)
    return raw, records, ranking, json.loads(published.read_text(encoding="utf-8"))["ranking"]


def test_every_judged_match_becomes_a_battle(rakuda):
    raw, records, _, _ = rakuda

    scores = Counter(m["score"] for m in raw["matches"])
    assert len(records) == sum(n for score, n in scores.items() if score != -1) == 800
    assert Counter(r.winner for r in records) == {
        "model_a": scores[1],
        "model_b": scores[2],
        "tie": scores[3],
    }
    assert len({r.question_id for r in records}) == 40
    assert all(r.question_text() and r.answer_a() and r.answer_b() for r in records)


def test_win_rates_equal_the_published_ones_to_4_decimals(rakuda):
    _, _, ranking, published = rakuda

    assert {m.name for m in ranking.models} == {p["model_id"] for p in published}
    for entry in published:
        ours = ranking.model(entry["model_id"])
        assert round(ours.win_rate, 4) == round(entry["win_rate"], 4), entry["model_id"]
        assert ours.win_rate == pytest.approx(entry["win_rate"], abs=1e-12)


def test_the_strength_order_matches_the_published_ranking(rakuda):
    _, _, ranking, published = rakuda

    theirs = [p["model_id"] for p in sorted(published, key=lambda p: -p["median"])]
    assert ranking.names == theirs
    # Different estimators (their posterior median, our regularised ML fit), same scale.
    for entry in published:
        assert ranking.model(entry["model_id"]).strength == pytest.approx(entry["median"], abs=30)


def test_published_strengths_sit_inside_our_intervals(rakuda):
    _, _, ranking, published = rakuda

    for entry in published:
        ours = ranking.model(entry["model_id"])
        assert ours.ci_low < entry["median"] < ours.ci_high, entry["model_id"]
    assert ranking.notes == []  # every model met every other, and none was undefeated


# --- Both tournaments through import_votes (issue 14) -------------------------------------------

TOURNAMENTS = {
    "v1 gpt-4": "rakuda/hist_ea2b4dc/jrank/tournaments/rakuda_v1_gpt4.jsonl",
    "v1 7-31": "rakuda/hist_941deef/jrank/tournaments/rakuda_v1_7-31.jsonl",
}
# The maximum-likelihood strengths the Rakuda authors published for the v1 GPT-4 tournament:
# Bradley-Terry with a first-position advantage, ties as half, centred, 400 / ln 10 per unit,
# mean 1000 (quoted in issue 14).
PUBLISHED_MLE = {
    "gpt-4:20230713": 1511.243,
    "gpt-3.5-turbo-0301:20230614": 1378.632,
    "rwkv-world-jpn-55": 1075.449,
    "super-torin-sama-alpha2": 1010.806,
    "rinna/japanese-gpt-neox-3.6b-instruction-ppo": 862.585,
    "izumi-lab/stormy-7b-10ep": 848.215,
    "rinna/japanese-gpt-neox-3.6b-instruction-sft-v2": 814.526,
    "cyberagent/open-calm-7b": 794.771,
    "rinna/japanese-gpt-neox-3.6b": 703.772,
}


def _tournament(external_data, key: str):
    path = external_data / TOURNAMENTS[key]
    if not path.is_file():
        pytest.skip(f"Rakuda tournament not found: {path}")
    return path


def _unregularised_elo(path) -> dict[str, float]:
    """Bradley-Terry on wins + ties / 2 straight from the tournament file, by choix with
    alpha = 0 (no code of ours in between)."""
    matches = json.loads(path.read_text(encoding="utf-8"))["matches"]
    names = sorted({m[side] for m in matches for side in ("model1_id", "model2_id")})
    index = {name: i for i, name in enumerate(names)}
    scores = np.zeros((len(names), len(names)))
    for m in matches:
        i, j = index[m["model1_id"]], index[m["model2_id"]]
        if m["score"] == 1:
            scores[i, j] += 1
        elif m["score"] == 2:
            scores[j, i] += 1
        elif m["score"] == 3:
            scores[i, j] += 0.5
            scores[j, i] += 0.5
    theta = choix.ilsr_pairwise_dense(scores, alpha=0.0, max_iter=100_000, tol=1e-12)
    theta -= theta.mean()
    return {name: 1000 + 400 / math.log(10) * theta[index[name]] for name in names}


@pytest.mark.django_db
@pytest.mark.parametrize("key", sorted(TOURNAMENTS))
def test_default_strengths_of_an_imported_tournament_are_the_unregularised_mle(
    key, external_data, tmp_path
):
    path = _tournament(external_data, key)
    call_command("import_votes", str(path), "--study", f"rakuda {key}")
    study = Study.objects.get(name=f"rakuda {key}")

    out = tmp_path / "results.json"
    call_command(
        "export_results", study.name, "--format", "json", "--bootstrap", "0", "--out", str(out)
    )
    exported = json.loads(out.read_text(encoding="utf-8"))

    expected = _unregularised_elo(path)
    ours = {m["name"]: m["strength"] for m in exported["models"]}
    assert set(ours) == set(expected)
    for name, strength in expected.items():
        assert ours[name] == pytest.approx(strength, abs=0.5), name
    assert exported["fit"]["maximum_likelihood"] is True
    assert exported["ranking"]["alpha"] == 0
    assert exported["options"]["method"] == "bradley_terry"
    assert exported["options"]["position"] is False


@pytest.mark.django_db
def test_the_position_fit_of_the_imported_gpt4_tournament_is_the_published_mle(
    external_data, tmp_path
):
    path = _tournament(external_data, "v1 gpt-4")
    call_command("import_votes", str(path), "--study", "rakuda gpt-4 positions")
    study = Study.objects.get(name="rakuda gpt-4 positions")
    # model1 was shown first in every match: the import kept it as the shown order.
    votes = Vote.objects.filter(comparison__study=study)
    assert not votes.filter(first_shown="").exists()

    out = tmp_path / "results.json"
    call_command(
        "export_results",
        study.name,
        "--format",
        "json",
        "--position",
        "--bootstrap",
        "0",
        "--out",
        str(out),
    )
    exported = json.loads(out.read_text(encoding="utf-8"))

    ours = {m["name"]: m["strength"] for m in exported["models"]}
    for name, published in PUBLISHED_MLE.items():
        assert ours[name] == pytest.approx(published, abs=0.05), name
    assert exported["options"]["position"] is True
    assert exported["fit"]["position_advantage_elo"] < 0  # GPT-4 favoured the second answer


@pytest.mark.django_db
def test_an_import_whose_shown_order_is_unknown_keeps_none(external_data):
    path = _tournament(external_data, "v1 gpt-4")
    call_command("import_votes", str(path), "--study", "unordered", "--shown-order-unknown")

    votes = Vote.objects.filter(comparison__study__name="unordered")
    assert votes.count() == 800
    assert not votes.exclude(first_shown="").exists()
    fitted = results.study_ranking(study=Study.objects.get(name="unordered"), position=True)
    assert fitted.position_advantage_elo is None
