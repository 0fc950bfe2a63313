"""An LLM judge's votes kept apart from people's, and the agreement of the two, on real data
nobody here wrote: Rakuda's GPT-4 tournament imported as judge votes, and people's votes
simulated from known strengths on the same comparisons (fixed seed). Every figure is checked
against one computed here, independently (kappa by its formula in numpy, tau with scipy)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from scipy import stats

from annotation import results
from annotation.battles import rakuda_tournament_to_battles, write_battles
from annotation.models import Comparison, Study, Vote

pytestmark = pytest.mark.django_db

TOURNAMENT = "rakuda/hist_ea2b4dc/jrank/tournaments/rakuda_v1_gpt4.jsonl"
PUBLISHED = "rakuda/hist_ea2b4dc/jrank/rankings/rakuda_v1_gpt4.json"
STUDY = "rakuda people and gpt-4"
PEOPLE_PER_COMPARISON = 3
TIE_SHARE = 0.15


@pytest.fixture
def both(tmp_path, external_data):
    """The study: Rakuda's 800 GPT-4 verdicts as judge votes, then three simulated people's
    votes on each of its comparisons. Returns (study, people's votes as (comparison, outcome))."""
    tournament = external_data / TOURNAMENT
    if not tournament.is_file():
        pytest.skip(f"Rakuda tournament not found: {tournament}")
    judged = tmp_path / "gpt4.jsonl"
    judged.write_text(write_battles(rakuda_tournament_to_battles(tournament)), encoding="utf-8")
    call_command("import_votes", str(judged), "--study", STUDY, "--voters", "judge")
    study = Study.objects.get(name=STUDY)

    # Known strengths: the published order with the 4th and 5th swapped (people disagree with
    # GPT-4 on one pair, as LINE's people did on line vs rinna), evenly spaced on the log scale.
    published = json.loads((external_data / PUBLISHED).read_text(encoding="utf-8"))["ranking"]
    order = [p["model_id"] for p in sorted(published, key=lambda p: -p["median"])]
    order[3], order[4] = order[4], order[3]
    theta = dict(zip(order, np.linspace(1.5, -1.5, len(order)), strict=True))
    rng = np.random.default_rng(13)
    lines, simulated = [], []
    comparisons = Comparison.objects.filter(study=study).select_related(
        "question", "run_a__model", "run_b__model"
    )
    for c in comparisons.order_by("pk"):
        a, b = c.run_a.model.name, c.run_b.model.name
        p_a = (1 - TIE_SHARE) / (1 + np.exp(theta[b] - theta[a]))
        for _ in range(PEOPLE_PER_COMPARISON):
            outcome = rng.choice(["a", "tie", "b"], p=[p_a, TIE_SHARE, 1 - TIE_SHARE - p_a])
            simulated.append((c.pk, str(outcome)))
            winner = {"a": "model_a", "b": "model_b", "tie": "tie"}[str(outcome)]
            record = {"question_id": c.question.external_id, "model_a": a, "model_b": b}
            lines.append(json.dumps(record | {"winner": winner, "judge": "crowd"}))
    people = tmp_path / "people.jsonl"
    people.write_text("\n".join(lines) + "\n", encoding="utf-8")
    call_command("import_votes", str(people), "--study", STUDY, "--shown-order-unknown")
    return study, simulated


def _majority(outcomes) -> str:
    counts = Counter(outcomes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def test_judge_votes_are_kept_apart_and_never_count_against_k(both, external_data):
    study, simulated = both
    judge = Vote.objects.filter(comparison__study=study, voter="judge")
    records = rakuda_tournament_to_battles(external_data / TOURNAMENT)
    assert judge.count() == len(records) == 800
    assert set(judge.values_list("judge", flat=True)) == {r.judge for r in records}
    # vote_count (what the claim reads against K) holds people's votes only.
    per_comparison = Counter(pk for pk, _ in simulated)
    for pk, count in Comparison.objects.filter(study=study).values_list("pk", "vote_count"):
        assert count == per_comparison[pk] == PEOPLE_PER_COMPARISON

    people = results.study_results(study=study, bootstrap=0)
    judges = results.study_results(study=study, bootstrap=0, voters="judge")
    everyone = results.study_results(study=study, bootstrap=0, voters="all")
    assert (people.n_votes, judges.n_votes) == (len(simulated), 800)
    # Issue 28: both kinds are never added; "all" is the prediction-powered fit, its tables
    # people's votes (tests/annotation/test_results_ppi.py).
    assert everyone.n_votes == len(simulated) and everyone.ranking is None
    assert everyone.combined.powered.human_votes == len(simulated)
    assert everyone.combined.powered.judge_votes == 800
    # Each reading counts only its votes: the judge's pair table is Rakuda's own counts.
    counts = defaultdict(Counter)
    for r in records:
        counts[frozenset((r.model_a, r.model_b))][r.winner] += 1
    for row in judges.pairs:
        assert row.games == sum(counts[frozenset((row.model_a, row.model_b))].values())
    # The fit cache keys on the voters.
    keys = {
        results.fit_cache_key(study=study, options=results.fit_options(voters=v))
        for v in results.VOTERS
    }
    assert len(keys) == 3


@pytest.mark.slow  # a large study or many simulated votes: the full suite runs it
def test_agreement_figures_match_an_independent_computation(
    both, client, staff_user, external_data
):
    study, simulated = both
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/").json()
    found = body["judge_agreement"]
    judges = {r.judge for r in rakuda_tournament_to_battles(external_data / TOURNAMENT)}
    assert body["voters"] == "people" and set(found["judges"]) == judges

    # Per comparison: people's majority outcome against the judge's (a draw is a tie).
    people = defaultdict(list)
    for pk, outcome in simulated:
        people[pk].append(outcome)
    judge = defaultdict(list)
    orders = defaultdict(lambda: {"a": [], "b": []})
    for pk, outcome, first in (
        Vote.objects.filter(comparison__study=study, voter="judge")
        .order_by("pk")
        .values_list("comparison_id", "outcome", "first_shown")
    ):
        judge[pk].append(outcome)
        orders[pk][first].append(outcome)
    both_judged = sorted(set(people) & set(judge))
    classes = ["a", "tie", "b"]
    table = np.zeros((3, 3))
    for pk in both_judged:
        table[classes.index(_majority(people[pk])), classes.index(_majority(judge[pk]))] += 1
    n = table.sum()
    p_o = np.trace(table) / n
    assert found["compared"] == len(both_judged) == len(judge)
    assert found["raw_agreement"] == pytest.approx(p_o)
    # Kappa is read on the table plus its mirror (a and b swapped), so that it does not depend
    # on which model is stored as "a" (issue 28).
    mirrored = table + table[::-1, ::-1]
    n = mirrored.sum()
    p_e = (mirrored.sum(axis=1) / n) @ (mirrored.sum(axis=0) / n)
    assert found["cohens_kappa"] == pytest.approx((p_o - p_e) / (1 - p_e))
    assert found["confusion"]["people_by_judge"] == table.astype(int).tolist()
    # Strong simulated people agree with GPT-4 well beyond chance.
    assert found["cohens_kappa"] > 0.2

    # Self-consistency under swap: verdicts on one comparison in opposite shown orders.
    pairs = [(x, y) for o in orders.values() for x, y in zip(o["a"], o["b"], strict=False)]
    assert pairs, "Rakuda judged some comparisons in both orders"
    assert found["swap"]["pairs"] == len(pairs)
    assert found["swap"]["rate"] == pytest.approx(sum(x == y for x, y in pairs) / len(pairs))

    # Position bias: the share of decided verdicts won by the answer shown first.
    votes = Vote.objects.filter(comparison__study=study, voter="judge").exclude(outcome="tie")
    first_wins = sum(o == f for o, f in votes.values_list("outcome", "first_shown"))
    assert found["position_bias"]["first_shown_wins"] == first_wins
    assert found["position_bias"]["first_shown_rate"] == pytest.approx(first_wins / votes.count())

    # Kendall's tau of the two strength orders, from each reading's own strengths.
    strengths = []
    for voters in ("people", "judge"):
        read = client.get(f"/api/studies/{study.pk}/results/?voters={voters}").json()
        assert read["voters"] == voters
        strengths.append({m["name"]: m["strength"] for m in read["models"]})
    names = sorted(strengths[0])
    assert all(strengths[0][m] != strengths[1][m] for m in names)  # two fits, one per side
    expected = stats.kendalltau([strengths[0][m] for m in names], [strengths[1][m] for m in names])
    assert found["kendall_tau"] == pytest.approx(expected.statistic)
    assert found["tau_p_value"] == pytest.approx(expected.pvalue)

    # Per model pair, both sides' win / tie / loss counts.
    for pair in found["pairs"]:
        games = [sum(pair[side].values()) for side in ("people", "judge")]
        assert games[0] == PEOPLE_PER_COMPARISON * sum(
            1
            for c in Comparison.objects.filter(study=study).select_related(
                "run_a__model", "run_b__model"
            )
            if {c.run_a.model.name, c.run_b.model.name} == {pair["model_a"], pair["model_b"]}
        )
        assert games[1] > 0

    # The page shows the block; the JSON export carries the same figures.
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert 'id="judge-agreement"' in page and "Cohen" in page
    exported = client.get(f"/studies/{study.pk}/results/download/json/").json()
    assert exported["judge_agreement"] == found


def test_voters_read_only_their_votes_in_every_output(both, client, staff_user, tmp_path):
    study, simulated = both
    client.force_login(staff_user)
    shapes = {}
    for voters in results.VOTERS:
        body = client.get(f"/api/studies/{study.pk}/results/?voters={voters}").json()
        shapes[voters] = body
        assert body["voters"] == voters
    assert set(shapes["people"]) == set(shapes["judge"])
    assert shapes["people"]["n_votes"] == len(simulated)
    assert shapes["judge"]["n_votes"] == 800
    # Issue 28: "all" is the prediction-powered fit, never the votes added together.
    assert shapes["all"]["strengths_from"] == "prediction-powered"
    fits = shapes["all"]["prediction_powered"]["fits"]
    assert (
        fits["prediction-powered"]["human_votes"],
        fits["prediction-powered"]["judge_votes"],
    ) == (
        len(simulated),
        800,
    )
    bad = client.get(f"/api/studies/{study.pk}/results/?voters=robots")
    assert bad.status_code == 400 and "voters" in bad.json()["detail"]
    page = client.get(f"/studies/{study.pk}/results/?voters=judge")
    assert page.status_code == 200
    assert '<option value="judge" selected>' in page.content.decode()
    svg = client.get(f"/studies/{study.pk}/results/strength.svg?voters=judge")
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert client.get(f"/studies/{study.pk}/results/?voters=robots").status_code == 400

    out = tmp_path / "judge.csv"
    call_command(
        "export_results", STUDY, "--format", "votes", "--voters", "judge", "--out", str(out)
    )
    assert len(out.read_text(encoding="utf-8").strip().splitlines()) == 1 + 800
    download = client.get(f"/studies/{study.pk}/results/download/votes/?voters=people")
    assert len(download.content.decode().strip().splitlines()) == 1 + len(simulated)
    with pytest.raises(CommandError):
        call_command("export_results", STUDY, "--format", "json", "--voters", "robots")


def test_compare_studies_reads_people_against_the_judge_as_the_agreement_does(both, capsys):
    study, _ = both
    call_command(
        "compare_studies",
        STUDY,
        STUDY,
        "--voters-first",
        "people",
        "--voters-second",
        "judge",
        "--json",
    )
    compared = json.loads(capsys.readouterr().out)
    found = results.study_judge_agreement(study=study)
    assert compared["kendall_tau"] == pytest.approx(found["kendall_tau"])
    assert compared["p_value"] == pytest.approx(found["tau_p_value"])
    by_pair = {(p["model_a"], p["model_b"]): p for p in compared["pairs"]}
    for pair in found["pairs"]:
        rates = by_pair.get((pair["model_a"], pair["model_b"]))
        if rates is None:  # the comparison counts each pair from the stronger model's side
            rates = by_pair[(pair["model_b"], pair["model_a"])]
            first, second = 1 - rates["win_rate_first"], 1 - rates["win_rate_second"]
        else:
            first, second = rates["win_rate_first"], rates["win_rate_second"]
        for side, rate in (("people", first), ("judge", second)):
            w, t, lose = (pair[side][k] for k in ("wins", "ties", "losses"))
            assert rate == pytest.approx((w + t / 2) / (w + t + lose))


def test_a_judge_file_imported_again_still_leaves_k_alone(both, tmp_path, external_data):
    study, _ = both
    before = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    # The same file again adds nothing (imports are idempotent) ...
    judged = tmp_path / "again.jsonl"
    judged.write_text(
        write_battles(rakuda_tournament_to_battles(external_data / TOURNAMENT)), encoding="utf-8"
    )
    call_command("import_votes", str(judged), "--study", STUDY, "--voters", "judge")
    assert Vote.objects.filter(comparison__study=study, voter="judge").count() == 800
    # ... and a second judge's verdicts on the same comparisons are new votes, none of them
    # counted toward K.
    second = tmp_path / "second-judge.jsonl"
    second.write_text(
        write_battles(rakuda_tournament_to_battles(external_data / TOURNAMENT, judge="judge-2")),
        encoding="utf-8",
    )
    call_command("import_votes", str(second), "--study", STUDY, "--voters", "judge")
    assert dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count")) == before
    assert Vote.objects.filter(comparison__study=study, voter="judge").count() == 1600
