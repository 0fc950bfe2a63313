"""The one CSV writer and the one Markdown writer (evalsite/exports.py): plain functions, read
back the way their readers meet them (csv.reader as a spreadsheet, markdown-it as a renderer)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from evalsite import exports
from tests.export_checks import (
    FORMULA_STARTS,
    delimiters,
    flat,
    formula_cells,
    hostile_tags,
    read_html,
    render,
    table_lines,
)

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "![i](javascript:alert(2))",
    "<javascript:alert(3)>",
    "<script>alert(4)</script>",
    "a | b",
    "a \\| b",
    "trailing backslash \\",
    "line one\nline two\r\nline three\rfour\u2028five",
    "*em* **strong** _under_ __dunder__ `code` ~~strike~~",
    "&lt;img src=x onerror=alert(5)&gt; &amp; &#106;avascript:alert(6)",
    "JavaScript :alert(7) vbscript:msgbox(8) data:text/html,<b>9</b>",
    "[ref]: javascript:alert(10)",
    "llm_jp_13b (SFT) v.s. rinna-3.6b [998, 1070]",
    "日本語のモデル｜ラベル",
]


# --- CSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_text_cell_that_starts_a_formula_gets_an_apostrophe(start):
    text = exports.csv_text([f"{start}header"], [[f"{start}1+1"], [f"{start}cmd|' /C calc'!A0"]])

    assert formula_cells(text) == []
    assert [row[0] for row in csv.reader(io.StringIO(text, newline=""))] == [
        f"'{start}header",
        f"'{start}1+1",
        f"'{start}cmd|' /C calc'!A0",
    ]


def test_numbers_stay_numbers_and_other_text_is_untouched():
    row = [-3, -12.5, np.int64(-7), np.float64(-0.25), Decimal("-1.5"), None, "普通の回答", 0]
    text = exports.csv_text(["a", "b", "c", "d", "e", "f", "g", "h"], [row])

    assert text.splitlines()[1] == "-3,-12.5000,-7,-0.2500,-1.5,,普通の回答,0"


def test_commas_quotes_and_line_breaks_survive_the_round_trip():
    cells = ['a, "quoted" b', "two\nlines", "=formula, with comma", "fine\r@SUM(1)", 7]
    text = exports.csv_text(["x", "y", "z", "w", "n"], [cells, ["plain", "", "", "", 8]])

    read = list(csv.reader(io.StringIO(text, newline="")))
    assert read[1:] == [
        ['a, "quoted" b', "two\nlines", "'=formula, with comma", "fine\r@SUM(1)", "7"],
        ["plain", "", "", "", "8"],
    ]
    assert formula_cells(text) == []
    assert text.splitlines()[-1] == "plain,,,,8"  # only a row with a carriage return is quoted


def test_the_streaming_writer_gives_one_line_per_row_and_the_same_document():
    rows = [[i, f"@{i}"] for i in range(3)]
    lines = list(exports.csv_lines(["n", "text"], iter(rows)))

    assert lines == ["n,text\n", "0,'@0\n", "1,'@1\n", "2,'@2\n"]
    assert "".join(lines) == exports.csv_text(["n", "text"], rows)


# --- Markdown ----------------------------------------------------------------------------------


def test_a_table_of_hostile_cells_renders_inert_and_shows_each_text_as_given():
    rows = [[text, f"{i}%"] for i, text in enumerate(HOSTILE)]
    markdown = exports.markdown_table(["Model <b>", "Win"], rows, align="lr")

    html = render(markdown)
    assert hostile_tags(html) == []
    (table,) = read_html(html).tables
    assert table[0] == ["Model <b>", "Win"]
    assert table[1:] == [[flat(text), f"{i}%"] for i, text in enumerate(HOSTILE)]
    (lines,) = table_lines(markdown)
    assert len(lines) == len(HOSTILE) + 2
    assert {delimiters(line) for line in lines} == {3}
    assert lines[1] == "|---|---:|"


def test_raw_markdown_keeps_no_link_html_or_script_scheme_of_its_cells():
    markdown = exports.markdown_table(["x"], [[text] for text in HOSTILE])

    for forbidden in ("<img", "<script", "](", "javascript:", "vbscript:", "data:"):
        assert forbidden not in markdown.lower()


def test_ordinary_labels_and_figures_stay_readable():
    markdown = exports.markdown_table(
        ["Model", "Strength"], [["line-3.6b (SFT)", "1034 [998, 1070]"], ["llm_jp_13b", "-"]]
    )

    assert "| line-3.6b (SFT) | 1034 [998, 1070] |" in markdown
    assert "| llm_jp_13b | - |" in markdown


@pytest.mark.parametrize(
    "text",
    ["# heading", "- item", "+ item", "1. first", "2) second", "[ref]: javascript:alert(1)", "==="],
)
def test_text_that_begins_a_line_starts_no_block_of_its_own(text):
    markdown = f"## {exports.markdown_text(text)}\n\n- {exports.markdown_text(text)}\n"

    html = render(markdown)
    assert html == f"<h2>{text}</h2>\n<ul>\n<li>{text}</li>\n</ul>\n"


def test_a_ragged_row_or_a_bad_alignment_is_refused():
    with pytest.raises(ValueError, match="row 2 has 1 cells; the header has 2"):
        exports.markdown_table(["a", "b"], [["1", "2"], ["3"]])
    with pytest.raises(ValueError, match="alignment 'lx'"):
        exports.markdown_table(["a", "b"], [], align="lx")


# --- file names and the module itself ------------------------------------------------------------


def test_a_file_name_loses_control_and_format_characters_and_path_separators():
    assert exports.file_name("votes\r\n2024\u202egpj.exe/../x\\y.jsonl") == (
        "votes__2024_gpj.exe_.._x_y.jsonl"
    )
    assert exports.file_name('データ"; filename*=x.jsonl') == 'データ"; filename*=x.jsonl'
    assert exports.file_name(" \t ") == exports.FALLBACK_NAME


def test_the_writers_module_imports_no_django():
    path = Path(exports.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('plain_exports', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.csv_text(['a'], [['=1']]) == \"a\\n'=1\\n\"\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
