"""Length and style control: the features, a planted length effect recovered and removed from
the strengths, and the fit on the results page and in the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command
from scipy.special import expit

from annotation.models import Comparison, Vote
from annotation.ranking import ELO_PER_LOG, aggregate, rank
from annotation.ranking.covariates import normalised_differences, style_control, style_counts

MARKDOWN = """# 手順
**大事な点**は二つです。

- 早く寝る
- 朝日を浴びる
1. 準備する
2. 実行する

## まとめ
__以上__です。"""


def test_style_counts_reads_length_headers_list_items_and_bold():
    assert style_counts(MARKDOWN) == (len(MARKDOWN), 2, 4, 2)
    assert style_counts("ただの文です。") == (7, 0, 0, 0)


def test_normalised_differences_are_lmarenas_and_zero_when_both_are_zero():
    # (a - b) / (a + b + 1), lmarena's normalisation (issue 28)
    got = normalised_differences(np.array([[30, 0, 2, 0]]), np.array([[10, 0, 0, 0]]))
    np.testing.assert_allclose(got, [[20 / 41, 0.0, 2 / 3, 0.0]])


def _planted(seed: int = 1, effect: float = 1.0):
    """Six models; model 3 writes answers four times as long, and judges reward length by
    ``effect`` per unit of normalised length difference. Every pair on 100 questions, 3 votes."""
    rng = np.random.default_rng(seed)
    k, nq = 6, 100
    true = np.array([0.4, 0.2, 0.0, 0.0, -0.2, -0.4])
    lengths = rng.lognormal(np.log([300, 300, 300, 1200, 300, 300])[None, :], 0.3, (nq, k))
    features = np.stack(
        [lengths, rng.poisson(1, (nq, k)), rng.poisson(3, (nq, k)), rng.poisson(1, (nq, k))],
        axis=-1,
    ).astype(float)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    q = np.repeat(np.arange(nq), len(pairs) * 3)
    a = np.tile(np.repeat([i for i, _ in pairs], 3), nq)
    b = np.tile(np.repeat([j for _, j in pairs], 3), nq)
    diff = normalised_differences(lengths[q, a], lengths[q, b])
    outcome = np.where(rng.random(a.size) < expit(true[a] - true[b] + effect * diff), 0, 2)
    comparison = (q * k + a) * k + b
    return true, features, q, a, b, outcome, comparison, diff


def test_the_length_controlled_fit_recovers_a_planted_length_effect_and_removes_it():
    true, features, q, a, b, outcome, comparison, diff = _planted()
    names = [f"m{i}" for i in range(6)]

    controlled = style_control(
        a, b, outcome, q, comparison, features[q, a], features[q, b], models=names
    )
    raw = rank(aggregate(a, b, outcome, q, 6, 100), models=names, bootstrap=0)

    length = next(c for c in controlled.coefficients if c.feature == "length")
    planted = 1.0 * np.sqrt(np.mean(diff**2)) * ELO_PER_LOG  # per standard deviation, Elo
    assert length.low < planted < length.high
    assert length.low > 20  # clearly there
    for c in controlled.coefficients:
        if c.feature != "length":  # nothing planted: intervals hold zero
            assert c.low < 0 < c.high, c.feature
    truth = 1000 + ELO_PER_LOG * (true - true.mean())
    long_model = controlled.model("m3")
    assert long_model.low < truth[3] < long_model.high
    assert raw.model("m3").strength - truth[3] > 60  # the raw fit credits its length
    for i, name in enumerate(names):
        m = controlled.model(name)
        assert m.low < truth[i] < m.high, name


def test_without_a_style_effect_the_controlled_fit_agrees_with_the_raw_one():
    true, features, q, a, b, outcome, comparison, _ = _planted(seed=2, effect=0.0)
    names = [f"m{i}" for i in range(6)]
    controlled = style_control(
        a, b, outcome, q, comparison, features[q, a], features[q, b], models=names
    )
    raw = rank(aggregate(a, b, outcome, q, 6, 100), models=names, bootstrap=0)
    for name in names:
        assert abs(controlled.model(name).strength - raw.model(name).strength) < 20


def long_or_short(model_index: int, position: int) -> str:
    """Model 1 mostly answers at length with Markdown, the others mostly in a line; each now
    and then the other way (else style would follow the model exactly)."""
    long = (model_index == 1) != (position % 4 == 0)
    if long:
        items = "\n".join(f"- **要点{i}**: 詳しく説明します。" for i in range(2 + position % 6))
        return f"# 回答{position}\n\n{items}"
    return f"回答{model_index}-{position}です。"


@pytest.mark.django_db
def test_the_export_carries_the_style_controlled_fit_and_the_options(make_study, tmp_path):
    study = make_study(models=3, questions=12, k=3, answers=long_or_short)
    long_run = study.built.runs[1].pk
    rng = np.random.default_rng(4)
    votes = []
    for comparison in Comparison.objects.filter(study=study):
        for _ in range(3):
            if long_run in (comparison.run_a_id, comparison.run_b_id):
                long_wins = rng.random() < 0.8
                outcome = "a" if long_wins == (comparison.run_a_id == long_run) else "b"
            else:
                outcome = "a" if rng.random() < 0.5 else "b"
            votes.append(Vote(comparison=comparison, outcome=outcome, imported=True))
    Vote.objects.bulk_create(votes)

    out = tmp_path / "results.json"
    call_command(
        "export_results",
        study.name,
        "--format",
        "json",
        "--style-control",
        "--bootstrap",
        "50",
        "--out",
        str(out),
    )
    exported = json.loads(out.read_text(encoding="utf-8"))

    assert exported["options"] == {
        "method": "bradley_terry",
        "position": False,
        "resample": "question",
        "bootstrap": 50,
        "seed": 0,
        "style_control": True,
    }
    style = exported["style_control"]
    assert {m["name"] for m in style["models"]} == {m.name for m in study.built.models}
    fitted = {c["feature"] for c in style["coefficients"]}
    assert "length" in fitted
    # Here list items and bold spans differ exactly where headers do: said, and left out.
    assert len(style["notes"]) == 4 - len(fitted)
    assert all("tell the fit nothing new" in note for note in style["notes"])
    assert exported["orders"] and exported["model_intervals"]
    assert exported["robustness"]["top"] == study.built.models[1].name


@pytest.mark.django_db
def test_the_results_page_shows_the_new_figures(make_study, client, staff_user):
    study = make_study(models=3, questions=6, k=2, answers=long_or_short)
    votes = []
    for i, comparison in enumerate(Comparison.objects.filter(study=study)):
        for outcome in ("a", "b" if i % 3 else "tie"):
            votes.append(Vote(comparison=comparison, outcome=outcome, imported=True))
    Vote.objects.bulk_create(votes)
    client.force_login(staff_user)

    page = client.get(f"/studies/{study.pk}/results/?style=1")

    assert page.status_code == 200
    body = page.content.decode()
    for heading in (
        "Rank range",
        "95% CI (sandwich)",
        "Is each order settled?",
        "How many votes hold the top model up",
        "Length and style control",
    ):
        assert heading in body, heading
    assert "maximum-likelihood fit" in body or "regularised fit" in body
