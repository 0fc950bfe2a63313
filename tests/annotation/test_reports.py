"""Tables, exports and charts built from votes, checked against hand-computed counts (no db)."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from annotation import plots, reports
from annotation.ranking import rank
from annotation.ranking.covariates import ControlledStrength, StyleCoefficient, StyleControl
from annotation.reports import VoteRow

LINE = "line-3.6b (SFT)"
RINNA = "rinna-3.6b (PPO)"
CALM = "open-calm-7b"


def vote(
    comparison: str,
    model_a: str,
    model_b: str,
    outcome: str,
    *,
    category: str = "qa",
    shown_left: str | None = "a",
    annotator: str = "annotator",
    question: str | None = None,
) -> VoteRow:
    fields = (question or comparison, category, model_a, model_b, outcome, shown_left, annotator)
    return VoteRow(comparison, *fields)


def judged(cast: str) -> list[VoteRow]:
    """LINE vs rinna votes written "comparison outcome annotator, ...", e.g. "c1 a alice"."""
    votes = (entry.split() for entry in cast.split(","))
    return [vote(c, LINE, RINNA, outcome, annotator=name) for c, outcome, name in votes]


@pytest.fixture
def rows() -> list[VoteRow]:
    """LINE vs rinna: 37 LINE wins, 27 ties, 36 rinna wins (10 of the LINE wins stored with
    rinna as model_a); LINE vs calm: 3 wins, 1 loss; categories: writing = first 50 votes."""
    out = []
    n = 0

    def add(model_a, model_b, outcome, count):
        nonlocal n
        for _ in range(count):
            category = "writing" if n < 50 else "qa"
            out.append(vote(f"c{n}", model_a, model_b, outcome, category=category))
            n += 1

    add(LINE, RINNA, "a", 27)
    add(RINNA, LINE, "b", 10)
    add(LINE, RINNA, "tie", 27)
    add(LINE, RINNA, "b", 36)
    add(CALM, LINE, "b", 3)
    add(CALM, LINE, "a", 1)
    return out


def test_the_pair_table_counts_from_the_first_model_s_side(rows):
    table = reports.pair_table(rows)

    assert [(p.model_a, p.model_b, p.wins, p.ties, p.losses) for p in table] == [
        (LINE, RINNA, 37, 27, 36),
        (LINE, CALM, 3, 0, 1),
    ]
    first = table[0]
    assert (first.games, first.win_pct, first.tie_pct, first.loss_pct) == (100, 37.0, 27.0, 36.0)
    assert first.line() == "line-3.6b (SFT) v.s. rinna-3.6b (PPO) | 37% | 27% | 36%"
    assert first.win_rate == pytest.approx((37 + 27 / 2) / 100)


def test_the_model_order_decides_which_side_a_pair_is_counted_from(rows):
    table = reports.pair_table(rows, models=[RINNA, CALM, LINE])

    assert [(p.model_a, p.model_b, p.wins, p.ties, p.losses) for p in table] == [
        (RINNA, LINE, 36, 27, 37),
        (CALM, LINE, 1, 0, 3),
    ]
    assert table[1].line({CALM: "calm-7b"}) == "calm-7b v.s. line-3.6b (SFT) | 25% | 0% | 75%"


def test_whole_percents_add_up_to_100():
    assert reports.whole_percents(1, 1, 1) == (34, 33, 33)
    assert reports.whole_percents(2, 1, 0) == (67, 33, 0)
    assert reports.whole_percents(0, 0, 0) == (0, 0, 0)
    assert sum(reports.whole_percents(17, 29, 3)) == 100


def test_pairs_are_broken_down_by_category(rows):
    tables = reports.category_tables(rows)

    assert list(tables) == ["writing", "qa"]
    # First 50 votes: 27 LINE wins + 10 (stored flipped) + 13 ties.
    assert [(p.wins, p.ties, p.losses) for p in tables["writing"]] == [(37, 13, 0)]
    assert [(p.model_a, p.model_b, p.wins, p.ties, p.losses) for p in tables["qa"]] == [
        (LINE, RINNA, 0, 14, 36),
        (LINE, CALM, 3, 0, 1),
    ]


def test_position_bias_counts_left_wins_among_decided_votes_with_a_binomial_test():
    rows = (
        [vote(f"l{i}", LINE, RINNA, "a", shown_left="a") for i in range(20)]
        + [vote(f"m{i}", LINE, RINNA, "b", shown_left="b") for i in range(10)]
        + [vote(f"r{i}", LINE, RINNA, "a", shown_left="b") for i in range(10)]
        + [vote(f"t{i}", LINE, RINNA, "tie", shown_left="a") for i in range(5)]
        + [vote(f"u{i}", LINE, RINNA, "a", shown_left=None) for i in range(3)]
    )

    bias = reports.position_bias(rows)

    assert (bias.left_wins, bias.right_wins, bias.ties, bias.unknown) == (30, 10, 5, 3)
    assert bias.decided == 40
    assert bias.left_rate == 0.75
    # Two-sided exact binomial test of 30 of 40 at p = 1/2, by hand.
    tail = sum(math.comb(40, k) for k in range(30, 41)) / 2**40
    assert bias.p_value == pytest.approx(2 * tail)


def test_position_bias_without_decided_votes_has_no_rate():
    bias = reports.position_bias(
        [vote("c", LINE, RINNA, "tie"), vote("d", LINE, RINNA, "a", shown_left=None)]
    )

    assert (bias.left_rate, bias.p_value, bias.ties, bias.unknown) == (None, None, 1, 1)


def test_annotators_are_measured_against_the_majority_of_the_other_votes():
    rows = judged("c1 a alice, c1 a bob, c1 b carol, c2 tie alice, c2 tie bob, c3 a alice")

    table = {row.annotator: row for row in reports.annotator_table(rows)}

    # c1: alice's and bob's others split 1-1 (no majority); carol's others are a, a.
    alice, bob, carol = table["alice"], table["bob"], table["carol"]
    assert (alice.votes, alice.ties, alice.compared, alice.agreed) == (3, 1, 1, 1)
    assert alice.tie_rate == pytest.approx(1 / 3)
    assert (bob.votes, bob.ties, bob.compared, bob.agreed, bob.agreement) == (2, 1, 1, 1, 1.0)
    assert (carol.votes, carol.compared, carol.agreed, carol.agreement) == (1, 1, 0, 0.0)
    assert [row.annotator for row in reports.annotator_table(rows)] == ["alice", "bob", "carol"]


def test_krippendorff_alpha_is_1_on_perfect_agreement():
    rows = []
    for i, outcome in enumerate(["a", "tie", "b", "a", "b"]):
        rows += [vote(f"c{i}", LINE, RINNA, outcome, annotator=name) for name in ("x", "y", "z")]

    result = reports.agreement(rows)

    assert result.alpha == pytest.approx(1.0)
    assert (result.comparisons, result.votes) == (5, 15)


def test_krippendorff_alpha_matches_a_hand_computed_value():
    # Units (a, a), (tie, tie), (a, tie): observed disagreement 2/6, expected 18/30,
    # alpha = 1 - (1/3) / (3/5) = 4/9.
    # c4 has one vote only: not used.
    rows = judged("c1 a x, c1 a y, c2 tie x, c2 tie y, c3 a x, c3 tie y, c4 b x")

    result = reports.agreement(rows)

    assert result.alpha == pytest.approx(4 / 9)
    assert (result.comparisons, result.votes) == (3, 6)


def test_agreement_is_undefined_without_repeated_votes_or_variation():
    single = reports.agreement([vote("c1", LINE, RINNA, "a"), vote("c2", LINE, RINNA, "b")])
    same = reports.agreement(
        [vote("c1", LINE, RINNA, "a")] * 2 + [vote("c2", LINE, RINNA, "a")] * 2
    )

    assert (single.alpha, single.note) == (None, reports.ALPHA_NO_REPEATS)
    assert (same.alpha, same.note) == (None, reports.ALPHA_ONE_VALUE)


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="unknown outcome 'left'"):
        reports.pair_table([vote("c1", LINE, RINNA, "left")])
    with pytest.raises(ValueError, match="shown_left must be"):
        reports.position_bias([vote("c1", LINE, RINNA, "a", shown_left="left")])


def test_rows_feed_the_ranking_with_the_left_answer_as_first_shown(rows):
    battles = reports.battles_from_rows(rows)
    result = rank(battles, bootstrap=0)

    assert battles[0].first_shown == "a"
    assert battles[0].question == "c0"
    assert result.model(LINE).wins == 37 + 3
    assert result.pair_counts[(LINE, RINNA)] == (37, 27, 36)


def test_the_json_export_keeps_its_field_names(rows):
    pairs = reports.pair_table(rows)
    ranking = rank(reports.battles_from_rows(rows), bootstrap=50)

    data = reports.to_json(ranking, pairs, "study-1", categories=reports.category_tables(rows))
    data = json.loads(json.dumps(data))  # JSON-ready

    assert data["study"] == "study-1"
    model_keys = {"name", "strength", "ci_low", "ci_high", "log_strength", "win_rate", "wins"}
    model_keys |= {"ties", "losses"}
    assert all(model_keys <= set(m) for m in data["models"])
    assert [m["name"] for m in data["models"]] == ranking.names
    line = next(m for m in data["models"] if m["name"] == LINE)
    assert (line["wins"], line["ties"], line["losses"]) == (40, 27, 37)
    assert data["pairs"][0] == {
        "model_a": LINE,
        "model_b": RINNA,
        "wins": 37,
        "ties": 27,
        "losses": 36,
        "games": 100,
        "win_pct": 37.0,
        "tie_pct": 27.0,
        "loss_pct": 36.0,
        "ties_bothbad": 0,
    }
    assert data["categories"]["writing"][0]["wins"] == 37
    assert data["ranking"]["method"] == "bradley_terry"


def test_exports_work_before_any_ranking_exists():
    data = reports.to_json(None, [], "empty")

    assert data == {"study": "empty", "models": [], "pairs": []}
    assert reports.to_csv(None, [])["strengths"].startswith("rank,name,strength")
    assert "| Model pair | Win | Tie | Loss |" in reports.to_markdown(None, [])


def test_the_csv_exports_hold_the_pairs_and_the_strengths(rows):
    pairs = reports.pair_table(rows)
    ranking = rank(reports.battles_from_rows(rows), bootstrap=0)

    exported = reports.to_csv(ranking, pairs)

    pair_rows = list(csv.DictReader(io.StringIO(exported["pairs"])))
    assert pair_rows[0]["model_a"] == LINE
    assert (pair_rows[0]["wins"], pair_rows[0]["win_pct"]) == ("37", "37.0000")
    strength_rows = list(csv.DictReader(io.StringIO(exported["strengths"])))
    assert [r["name"] for r in strength_rows] == ranking.names
    assert strength_rows[0]["rank"] == "1"
    assert float(strength_rows[0]["ci_low"]) <= float(strength_rows[0]["strength"])


def test_the_markdown_export_is_ready_to_paste(rows):
    pairs = reports.pair_table(rows)
    ranking = rank(reports.battles_from_rows(rows), bootstrap=100)

    text = reports.to_markdown(ranking, pairs, "LINE | rinna")

    assert text.startswith("## LINE \\| rinna\n")
    assert "| line-3.6b (SFT) v.s. rinna-3.6b (PPO) | 37% | 27% | 36% |" in text
    assert "| line-3.6b (SFT) v.s. open-calm-7b | 75% | 0% | 25% |" in text
    top = ranking.models[0]
    assert f"| 1 | {top.name} | {top.strength:.0f} | {top.ci_low:.0f} – {top.ci_high:.0f} |" in (
        text
    )
    assert "100 bootstrap rounds over questions" in text


def test_the_strength_chart_renders_png_and_svg(rows):
    ranking = rank(reports.battles_from_rows(rows), bootstrap=50)

    png = plots.strength_chart(ranking, title="モデルの強さ")
    svg = plots.strength_chart(ranking, fmt="svg")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in svg
    assert svg == plots.strength_chart(ranking, fmt="svg")  # stable bytes
    with pytest.raises(ValueError, match="unknown image format"):
        plots.strength_chart(ranking, fmt="gif")


def test_the_markdown_export_names_the_fit_its_sandwich_intervals_and_style_control(rows):
    ranking = rank(reports.battles_from_rows(rows), bootstrap=0)
    style = StyleControl(
        models=[ControlledStrength(LINE, 1040.0, 1010.0, 1070.0)],
        coefficients=[StyleCoefficient("answer length", 0.2, 35.5, 12.0, 59.0, 1.0)],
        position_advantage_elo=None,
        confidence=0.95,
        n_votes=len(rows),
        notes=["fitted on 104 votes"],
    )

    text = reports.to_markdown(ranking, reports.pair_table(rows), style=style)

    top = ranking.models[0]
    assert top.sandwich_low is not None
    assert "| 95% CI (sandwich) |" in text
    assert f"| {top.sandwich_low:.0f} – {top.sandwich_high:.0f} |\n" in text
    fit = "Regularised fit" if ranking.regularised else "Maximum-likelihood fit"
    assert fit in text and "sandwich intervals from the covariance clustered by question" in text
    assert "Length- and style-controlled strengths:" in text
    assert f"| {LINE} | 1040 | 1010 – 1070 |" in text
    assert "| answer length | 35.5 | 12.0 – 59.0 |" in text
