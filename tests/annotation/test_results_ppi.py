"""The results say what they rest on (issue 28): the design, the human and judge votes of each
estimate, the audit of the judge with a Wilson interval, and people's, the judge's and
prediction-powered strengths side by side, each labelled, in the page, the API and the exports;
``voters=all`` is the prediction-powered fit, never the two kinds of votes added.

Real data nobody here wrote: Rakuda's GPT-4 tournament imported as judge votes, and people's
votes simulated from known strengths on a random share of its comparisons (fixed seed). The
figures are checked against another engine (``ranking.rank`` on weighted battles) and the
audit's interval against statsmodels' Wilson interval."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from itertools import cycle

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client
from statsmodels.stats.proportion import proportion_confint

from annotation import powered, ranking, results, studies
from annotation.battles import rakuda_tournament_to_battles, write_battles
from annotation.models import Comparison, Study, Vote
from judging import routing

from .judged import CONSISTENT_A, CONSISTENT_B, INCONSISTENT, UNPARSABLE, judged_run
from .test_routing import _handed_out

pytestmark = pytest.mark.django_db

TOURNAMENT = "rakuda/hist_ea2b4dc/jrank/tournaments/rakuda_v1_gpt4.jsonl"
PUBLISHED = "rakuda/hist_ea2b4dc/jrank/rankings/rakuda_v1_gpt4.json"
STUDY = "rakuda sampled people and gpt-4"
PEOPLE_PER_COMPARISON = 3
SAMPLED_SHARE = 0.4
TIE_SHARE = 0.12
SCORES = {"a": 1.0, "tie": 0.5, "b": 0.0}


def _majority(outcomes) -> str:
    counts = Counter(outcomes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


@pytest.fixture
def sampled(tmp_path, external_data):
    """Rakuda's 800 GPT-4 verdicts as judge votes; three simulated people's votes on a random
    40 % of the study's comparisons. Returns (study, {comparison: people's outcomes})."""
    tournament = external_data / TOURNAMENT
    if not tournament.is_file():
        pytest.skip(f"Rakuda tournament not found: {tournament}")
    judged = tmp_path / "gpt4.jsonl"
    judged.write_text(write_battles(rakuda_tournament_to_battles(tournament)), encoding="utf-8")
    call_command("import_votes", str(judged), "--study", STUDY, "--voters", "judge")
    study = Study.objects.get(name=STUDY)
    # People are given a simple random sample of every comparison (the judge judged some).
    every = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    rng = np.random.default_rng(28)
    chosen = sorted(rng.choice(every, int(SAMPLED_SHARE * len(every)), replace=False))
    comparisons = Comparison.objects.filter(pk__in=chosen).select_related(
        "question", "run_a__model", "run_b__model"
    )
    # People's strengths: the published order with the 4th and 5th swapped, evenly spaced.
    published = json.loads((external_data / PUBLISHED).read_text(encoding="utf-8"))["ranking"]
    names = [p["model_id"] for p in sorted(published, key=lambda p: -p["median"])]
    names[3], names[4] = names[4], names[3]
    theta = dict(zip(names, np.linspace(1.2, -1.2, len(names)), strict=True))
    lines, people = [], defaultdict(list)
    for c in comparisons.order_by("pk"):
        a, b = c.run_a.model.name, c.run_b.model.name
        p_a = (1 - TIE_SHARE) / (1 + np.exp(theta[b] - theta[a]))
        for _ in range(PEOPLE_PER_COMPARISON):
            outcome = str(rng.choice(["a", "tie", "b"], p=[p_a, TIE_SHARE, 1 - TIE_SHARE - p_a]))
            people[c.pk].append(outcome)
            winner = {"a": "model_a", "b": "model_b", "tie": "tie"}[outcome]
            record = {"question_id": c.question.external_id, "model_a": a, "model_b": b}
            lines.append(json.dumps(record | {"winner": winner, "judge": "crowd"}))
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    call_command("import_votes", str(path), "--study", STUDY, "--shown-order-unknown")
    return study, dict(people)


def _strengths(fit: dict) -> dict[str, float]:
    return {m["name"]: m["strength"] for m in fit["models"] if m["estimated"]}


def _weighted_fit(battles: list[ranking.Battle], models: list[str]) -> dict[str, float]:
    fitted = ranking.rank(battles, models=models, bootstrap=0)
    return {m.name: m.strength for m in fitted.models}


def test_three_labelled_fits_with_what_each_rests_on(sampled, client, staff_user):
    study, people = sampled
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/").json()
    found = body["prediction_powered"]
    judge_votes = Vote.objects.filter(comparison__study=study, voter="judge")
    n_people = sum(map(len, people.values()))
    assert found["design"] == "uniform"
    assert judge_votes.count() == 800
    assert (found["human_votes"], found["judge_votes"]) == (n_people, 800)
    comparisons = Comparison.objects.filter(study=study).count()
    [stratum] = found["strata"]
    assert (stratum["comparisons"], stratum["with_people"]) == (comparisons, len(people))
    assert stratum["share"] == pytest.approx(len(people) / comparisons)

    fits = found["fits"]
    assert {kind: fit["label"] for kind, fit in fits.items()} == powered.LABELS
    judged = set(judge_votes.values_list("comparison_id", flat=True))
    rests = {
        kind: (fit["human_votes"], fit["judge_votes"], fit["people_comparisons"])
        for kind, fit in fits.items()
    }
    assert rests == {
        "people": (n_people, 0, len(people)),
        "judge": (0, 800, 0),
        "prediction-powered": (n_people, 800, len(people)),
    }
    assert fits["judge"]["judged_comparisons"] == len(judged)
    assert 0.0 <= fits["prediction-powered"]["lam"] <= 1.0
    assert fits["people"]["lam"] is None and fits["judge"]["lam"] is None

    # Another engine, the same figures: people alone (every vote weighs alike here) is the
    # plain fit of people's votes; the judge alone counts each comparison once.
    models = results.study_models(study=study)
    labels = results.study_labels(study=study)
    assert _strengths(fits["people"]) == pytest.approx(
        {m["name"]: m["strength"] for m in body["models"]}, abs=0.05
    )
    per_comparison = defaultdict(list)
    for pk, outcome in judge_votes.values_list("comparison_id", "outcome"):
        per_comparison[pk].append(outcome)
    pairs = {
        pk: (labels[a], labels[b], q)
        for pk, a, b, q in Comparison.objects.filter(study=study).values_list(
            "pk", "run_a__model__name", "run_b__model__name", "question_id"
        )
    }
    battles = [
        ranking.Battle(*pairs[pk][:2], outcome, str(pairs[pk][2]), weight=1 / len(outcomes))
        for pk, outcomes in per_comparison.items()
        for outcome in outcomes
    ]
    assert _strengths(fits["judge"]) == pytest.approx(_weighted_fit(battles, models), abs=0.05)

    # The judge narrows people's intervals (PPI++ never widens them in total).
    def widths(fit):
        return np.array([m["ci_high"] - m["ci_low"] for m in fit["models"] if m["estimated"]])

    assert (widths(fits["prediction-powered"]) ** 2).sum() <= (widths(fits["people"]) ** 2).sum()

    # The audit: every comparison both voted on, majority against majority, Wilson interval.
    both = [pk for pk in people if pk in per_comparison]
    agreeing = sum(_majority(people[pk]) == _majority(per_comparison[pk]) for pk in both)
    low, high = proportion_confint(agreeing, len(both), alpha=0.05, method="wilson")
    audit = found["audit"]
    assert audit["sample"] == "both voted"
    assert (audit["size"], audit["compared"], audit["agreeing"]) == (len(both),) * 2 + (agreeing,)
    assert (audit["low"], audit["high"]) == pytest.approx((low, high), abs=1e-9)

    # The JSON export is the API's.
    exported = client.get(f"/studies/{study.pk}/results/download/json/").json()
    assert exported["prediction_powered"] == found

    # The page: the design, the counts, the three labelled fits and the audit's interval.
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert 'id="three-fits"' in page
    for label in powered.LABELS.values():
        assert label in page
    assert "Design: <strong>uniform</strong>" in page
    assert f"human votes: <strong>{n_people}</strong>" in page
    assert "judge votes: <strong>800</strong>" in page
    assert f"95% Wilson interval {low:.3f} – {high:.3f}" in page
    assert f"{n_people} human votes on {len(people)} comparisons, 800 judge votes" in page


def test_voters_all_is_the_prediction_powered_fit_everywhere(sampled, client, staff_user, tmp_path):
    study, people = sampled
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/?voters=all").json()
    fit = body["prediction_powered"]["fits"]["prediction-powered"]
    assert body["strengths_from"] == "prediction-powered"
    assert body["pooling_note"] == powered.POOLING
    assert "ranking" not in body  # no fit of the votes added together
    assert [(m["name"], m["strength"]) for m in body["models"]] == [
        (m["name"], m["strength"]) for m in fit["models"]
    ]
    assert body["n_votes"] == sum(map(len, people.values()))  # the tables: people's votes

    page = client.get(f"/studies/{study.pk}/results/?voters=all").content.decode()
    assert 'id="pooling-note"' in page and 'id="ranking"' not in page
    assert '<option value="all" selected>' in page

    out = tmp_path / "all.csv"
    call_command(
        "export_results", STUDY, "--format", "strengths", "--voters", "all", "--out", str(out)
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["name"] for r in rows] == [m["name"] for m in fit["models"]]
    assert [float(r["strength"]) for r in rows] == pytest.approx(
        [m["strength"] for m in fit["models"]]
    )
    md = io.StringIO()
    call_command("export_results", STUDY, "--format", "md", "--voters", "all", stdout=md)
    assert "| Model | People alone | LLM judge alone | Prediction-powered" in md.getvalue()
    exported = io.StringIO()
    call_command("export_results", STUDY, "--format", "json", "--voters", "all", stdout=exported)
    assert json.loads(exported.getvalue())["strengths_from"] == "prediction-powered"

    # Comparing studies cannot pool either: a clear 400.
    compared = client.get(
        f"/api/studies/compare/?first={study.pk}&second={study.pk}&voters_first=all"
    )
    assert compared.status_code == 400
    assert compared.json()["detail"] == results.POOLED_COMPARISON
    # The chart of voters=all has no pooled fit to draw.
    assert client.get(f"/studies/{study.pk}/results/strength.svg?voters=all").status_code == 404


K = 2


@pytest.fixture
def routed_and_voted(make_study, annotator, other_annotator):
    """A routing study (3 models x 5 questions, K = 2): the judge consistent on 10 comparisons,
    inconsistent on 3, unparsable on 2; two people vote on everything handed to them."""
    study = make_study(models=3, questions=5, k=K, open_now=False)
    Study.objects.filter(pk=study.pk).update(routing=True)
    study.refresh_from_db()
    ids = list(Comparison.objects.filter(study=study).order_by("pk").values_list("pk", flat=True))
    states = [CONSISTENT_A, CONSISTENT_B] * 5 + [INCONSISTENT] * 3 + [UNPARSABLE] * 2
    run = judged_run(study, dict(zip(ids, states, strict=True)))
    routing.route_after_judge_run(run.pk)
    studies.study_open(study=study)
    choices = cycle(["left", "right", "tie", "left", "right"])
    for user in (annotator, other_annotator):
        client = Client()
        client.force_login(user)
        _handed_out(client, study, lambda assignment: next(choices))
    study.run = run
    return study


def test_a_routing_study_names_its_design_strata_and_audit(routed_and_voted, client, staff_user):
    study = routed_and_voted
    plan = routing.study_plan(study=study, run=study.run)
    combined = results.study_combined(study=study)
    assert combined.design == "routing"
    strata = {s.name: (s.comparisons, s.with_people) for s in combined.strata}
    assert strata == {"judge consistent": (10, len(plan.audited)), "judge unsure": (5, 5)}
    run_votes = Vote.objects.filter(judgment__run=study.run).count()
    assert combined.judge_votes == run_votes
    assert combined.human_votes == K * (len(plan.audited) + 5)

    audit = combined.audit
    assert audit.sample == "routing audit" and audit.size == len(plan.audited) == 2
    assert audit.compared == 2
    low, high = proportion_confint(audit.agreeing, 2, alpha=0.05, method="wilson")
    assert (audit.low, audit.high) == pytest.approx((low, high), abs=1e-9)

    # People alone weighs each audited comparison by 1 / its stratum's share (0.2): checked
    # against the other engine fed the same weights.
    people = combined.fits["people"]
    if people is not None:
        labels = results.study_labels(study=study)
        share = {pk: 0.2 for pk in plan.audited} | {pk: 1.0 for pk in plan.unsure}
        votes = Vote.objects.filter(comparison__study=study, voter="people")
        by_comparison = Counter(votes.values_list("comparison_id", flat=True))
        battles = [
            ranking.Battle(
                labels[a], labels[b], outcome, str(q), weight=1 / (by_comparison[pk] * share[pk])
            )
            for pk, a, b, q, outcome in votes.values_list(
                "comparison_id",
                "comparison__run_a__model__name",
                "comparison__run_b__model__name",
                "comparison__question_id",
                "outcome",
            )
        ]
        expected = _weighted_fit(battles, results.study_models(study=study))
        assert {m.name: m.strength for m in people.models} == pytest.approx(expected, abs=0.05)

    client.force_login(staff_user)
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert "Design: <strong>routing</strong>" in page
    assert "routing&#x27;s audit sample" in page or "routing's audit sample" in page
    assert 'id="plain-fit-note"' in page
    body = client.get(f"/api/studies/{study.pk}/results/").json()["prediction_powered"]
    assert body["audit"]["size"] == 2 and body["design"] == "routing"
