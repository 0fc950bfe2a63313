"""The leaderboard's plain table (no database): rounding once for every output, sorting with
missing figures last, and exports that neither run formulas nor break the Markdown table."""

from __future__ import annotations

import csv
import io

import pytest

from benchmarks import leaderboard_table as lt

HUMAN = lt.Column(key=lt.HUMAN, kind=lt.HUMAN, title="Human strength", detail="s: Elo")
MC = lt.Column(
    key=lt.bench_key("mc", "acc", "loglikelihood", 2),
    kind=lt.BENCH,
    title="mc acc",
    detail="log-likelihood, 2-shot",
    task="mc",
    metric="acc",
    scoring="loglikelihood",
    num_fewshot=2,
)


def _row(name, *, root=None, depth=0, human=None, mc=None, label=None):
    figures = {}
    if human is not None:
        figures[lt.HUMAN] = lt.Figure(value=human, low=human - 30.4, high=human + 30.6, n=12)
    if mc is not None:
        figures[MC.key] = lt.Figure(value=mc, stderr=0.04567, n=50, run=7)
    lineage = lt.Lineage(base=root if depth else None, root=root or name, depth=depth)
    return lt.Row(model=name, label=label or name, lineage=lineage, figures=figures)


ROWS = [
    _row("zeta", human=1010.4),
    _row("alpha", mc=0.61234),
    _row("zeta-lora", root="zeta", depth=1, human=990.0, mc=0.7),
    _row("mid", human=1100.0, mc=0.5),
]


def _order(key, direction):
    return [r.model for r in lt.sort_rows(ROWS, [HUMAN, MC], key, direction)]


def test_lineage_order_puts_tuned_models_under_their_base():
    assert _order(lt.LINEAGE, lt.ASC) == ["alpha", "mid", "zeta", "zeta-lora"]


def test_missing_figures_sort_last_both_ways():
    assert _order(lt.HUMAN, lt.DESC) == ["mid", "zeta", "zeta-lora", "alpha"]
    assert _order(lt.HUMAN, lt.ASC) == ["zeta-lora", "zeta", "mid", "alpha"]
    assert _order(MC.key, lt.DESC) == ["zeta-lora", "alpha", "mid", "zeta"]
    assert _order(MC.key, lt.ASC) == ["mid", "alpha", "zeta-lora", "zeta"]
    # A column this table lacks (no judge votes in the study): lineage order, nobody first.
    assert _order(lt.JUDGE, lt.DESC) == _order(lt.LINEAGE, lt.ASC)
    with pytest.raises(ValueError, match="unknown sort column"):
        _order("nonsense", lt.ASC)
    with pytest.raises(ValueError, match="asc or desc"):
        _order(lt.HUMAN, "up")


def test_every_output_prints_the_rounded_figure():
    table = lt.Table(columns=[HUMAN, MC], rows=lt.sort_rows(ROWS, [HUMAN, MC], lt.MODEL, lt.ASC))
    zeta = next(r for r in table.rows if r.model == "zeta-lora")
    assert lt.figure_text(HUMAN, zeta.figures[lt.HUMAN]) == "990 [960, 1021]"
    assert lt.figure_text(MC, zeta.figures[MC.key]) == "0.7000 ± 0.0457"
    assert lt.figure_text(MC, None) == ""

    rows = list(csv.DictReader(io.StringIO(lt.to_csv(table))))
    found = next(r for r in rows if r["model"] == "zeta-lora")
    assert float(found[lt.header(HUMAN)]) == 990 and float(found[f"{lt.header(HUMAN)} low"]) == 960
    assert float(found[f"{lt.header(MC)} stderr"]) == 0.0457
    assert found[f"{lt.header(MC)} run"] == "7" and found["base_model"] == "zeta"
    assert next(r for r in rows if r["model"] == "alpha")[lt.header(HUMAN)] == ""

    data = lt.to_json(table)
    assert data["rows"][-1]["figures"][MC.key]["value"] == 0.7
    assert data["rows"][-1]["figures"][MC.key]["text"] == "0.7000 ± 0.0457"
    assert data["columns"][1]["scoring"] == "loglikelihood"


def test_exports_run_no_formulas_and_keep_the_markdown_table_whole():
    hostile = _row("=HYPERLINK(1)", human=1000.0, label="a|b\nc")
    table = lt.Table(columns=[HUMAN], rows=[hostile])
    text = lt.to_csv(table)
    assert "'=HYPERLINK(1)" in text and "\n=HYPERLINK" not in text
    md = lt.to_markdown(table, title="x|y")
    assert "| a\\|b c |" in md and "## x\\|y" in md
    assert "- Human strength: s: Elo" in md
