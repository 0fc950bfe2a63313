"""Real data nobody here wrote: Rakuda's GPT-4-judged tournament (jrank, commit ea2b4dc).

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
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from annotation.battles import rakuda_tournament_to_battles
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
