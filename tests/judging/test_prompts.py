"""Judge prompts: the shipped presets, versions a run used kept, and prompts loaded from files
(good ones stored, bad ones refused naming the file, line and field, with nothing written)."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from evalsite.errors import ServiceError
from generation.importers import ImportFormatError
from judging.engine import verdicts
from judging.engine.presets import JA_GRADING, JA_PAIRWISE
from judging.models import JudgePrompt
from judging.prompts import (
    as_judge_template,
    judge_presets_install,
    judge_prompt_create,
    judge_prompt_delete,
    judge_prompt_for,
    judge_prompt_load,
    judge_prompt_preview,
    judge_prompt_update,
)
from judging.runs import judge_run_create
from tests.conftest import EXTERNAL_DATA

from .factories import idle_judge, judge_study

pytestmark = pytest.mark.django_db

RAKUDA_PROMPTS = (
    EXTERNAL_DATA / "rakuda" / "head_fae1ee7" / "jrank" / "data" / "judge_prompts.jsonl"
)

# A short pairwise judge of our own, as an admin would write one.
SHORT = {
    "name": "short_pairwise",
    "kind": "pairwise",
    "system_prompt": "公平に判定してください。",
    "template": "質問: {{ question }}\nA: {{ answer_1 }}\nB: {{ answer_2 }}\n"
    "[[A]]、[[B]]、[[C]] で答える。",
    "verdict_format": "brackets_abc",
}


def _used(prompt: JudgePrompt) -> None:
    """Make a judge run point at ``prompt`` (only queued: nothing listens)."""
    judge_run_create(
        judge=idle_judge(),
        study=judge_study(),
        prompt=prompt,
        grading=prompt.kind == "grading",
        enqueue=False,
    )


def _write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _rows():
    return list(JudgePrompt.objects.order_by("name", "version").values_list("name", "version"))


# --- presets and lookup ------------------------------------------------------------------------


def test_the_migration_ships_the_two_presets_as_version_one_matching_the_engines_data():
    for preset in (JA_PAIRWISE, JA_GRADING):
        row = JudgePrompt.objects.get(name=preset.name, version=1)
        assert as_judge_template(row) == preset


def test_installing_the_presets_again_creates_nothing_and_restores_a_deleted_one():
    assert judge_presets_install() == []
    JudgePrompt.objects.filter(name="ja_grading").delete()
    assert judge_presets_install() == ["ja_grading"]
    assert JudgePrompt.objects.filter(name="ja_grading").count() == 1


def test_the_default_prompt_is_the_latest_pairwise_or_grading_preset():
    assert str(judge_prompt_for()) == "ja_pairwise v1"
    assert str(judge_prompt_for(grading=True)) == "ja_grading v1"
    assert str(judge_prompt_for("ja_pairwise")) == "ja_pairwise v1"


def test_an_unknown_name_lists_the_names_there_are():
    with pytest.raises(ServiceError) as caught:
        judge_prompt_for("nope")
    assert "unknown judge prompt 'nope'" in str(caught.value)
    assert "ja_grading, " in str(caught.value) and "ja_pairwise" in str(caught.value)


def test_a_prompt_of_the_other_kind_is_refused():
    with pytest.raises(ServiceError, match="ja_pairwise.*is a pairwise prompt; grading needs"):
        judge_prompt_for("ja_pairwise", grading=True)


def test_the_preview_renders_sample_values_or_the_ones_given():
    row = judge_prompt_for(grading=True)
    text = judge_prompt_preview(row)
    assert "日本で一番高い山は何ですか？" in text and "模範解答" in text
    bare = judge_prompt_preview(row, {"question": "問い", "answer": "答え"})
    assert "[質問]\n問い" in bare and "[回答]\n答え" in bare
    assert "模範解答" not in bare  # no reference given: its section is left out


# --- versions ----------------------------------------------------------------------------------


def test_editing_a_version_no_run_used_changes_it_in_place():
    row = judge_prompt_create(**SHORT)
    saved = judge_prompt_update(prompt=row, changes={"system_prompt": "厳しく判定してください。"})
    assert saved.pk == row.pk and saved.version == 1
    assert JudgePrompt.objects.get(pk=row.pk).system_prompt == "厳しく判定してください。"


def test_editing_a_version_a_run_used_makes_the_next_version_and_keeps_the_old():
    row = judge_prompt_create(**SHORT)
    _used(row)
    saved = judge_prompt_update(prompt=row, changes={"template": SHORT["template"] + "\n理由も。"})
    assert (saved.name, saved.version) == ("short_pairwise", 2)
    assert JudgePrompt.objects.get(pk=row.pk).template == SHORT["template"]
    assert judge_prompt_for("short_pairwise") == saved
    # An edit of the old version again takes the number after the highest.
    again = judge_prompt_update(prompt=row, changes={"verdict_format": "last_line_123"})
    assert again.version == 3


def test_a_used_versions_description_changes_in_place():
    row = judge_prompt_create(**SHORT)
    _used(row)
    saved = judge_prompt_update(prompt=row, changes={"description": "短い判定"})
    assert saved.pk == row.pk
    assert JudgePrompt.objects.filter(name="short_pairwise").count() == 1


def test_a_change_that_changes_nothing_saves_nothing():
    row = judge_prompt_create(**SHORT)
    _used(row)
    assert judge_prompt_update(prompt=row, changes={"template": SHORT["template"]}) == row
    assert JudgePrompt.objects.filter(name="short_pairwise").count() == 1


def test_a_prompt_keeps_its_name_and_kind_and_a_name_is_created_once():
    row = judge_prompt_create(**SHORT)
    with pytest.raises(ServiceError, match="keeps its name"):
        judge_prompt_update(prompt=row, changes={"name": "other"})
    with pytest.raises(ServiceError, match="keeps its kind"):
        judge_prompt_update(prompt=row, changes={"kind": "grading", "verdict_format": "score"})
    with pytest.raises(ServiceError, match="already exists"):
        judge_prompt_create(**SHORT)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"template": "{{ question }} {{ answer_1 }}"},
            "template: the prompt never shows: answer_2",
        ),
        ({"template": "{{ question }"}, "template: the Jinja source failed"),
        ({"template": "{{ questoin }} {{ answer_1 }} {{ answer_2 }}"}, "template: the Jinja"),
        ({"verdict_format": "score"}, "verdict_format: a pairwise prompt reads one of"),
        ({"name": " "}, "name: a judge prompt needs a name"),
        ({"kind": "grading"}, "verdict_format: a grading prompt reads one of: score"),
    ],
)
def test_a_bad_prompt_is_refused_naming_the_field_and_nothing_is_saved(changes, message):
    before = _rows()
    with pytest.raises(ServiceError) as caught:
        judge_prompt_create(**{**SHORT, **changes})
    assert message in str(caught.value)
    assert _rows() == before


def test_a_grading_prompt_needs_a_score_range_that_is_a_range():
    fields = {
        "name": "g",
        "kind": "grading",
        "verdict_format": "score",
        "template": "{{ question }} {{ answer }}",
    }
    with pytest.raises(ServiceError, match="score_max: the highest score must be above"):
        judge_prompt_create(**fields, score_min=5, score_max=5)
    assert judge_prompt_create(**fields, score_min=0, score_max=10).score_max == 10


def test_a_used_version_cannot_be_deleted_and_an_unused_one_can():
    row = judge_prompt_create(**SHORT)
    _used(row)
    with pytest.raises(ServiceError, match="was used by a judge run and is kept"):
        judge_prompt_delete(prompt=row)
    spare = judge_prompt_create(**{**SHORT, "name": "spare"})
    judge_prompt_delete(prompt=spare)
    assert not JudgePrompt.objects.filter(name="spare").exists()


# --- files -------------------------------------------------------------------------------------


def test_rakudas_own_judge_prompt_loads_from_its_file_and_renders_what_it_asks():
    (row,) = judge_prompt_load(RAKUDA_PROMPTS)
    record = json.loads(RAKUDA_PROMPTS.read_text(encoding="utf-8"))
    assert (row.name, row.version, row.kind) == ("pair-ja", 1, "pairwise")
    assert row.verdict_format == "last_line_123"  # "last": the last line says 1, 2 or 3
    assert row.system_prompt == record["system_prompt"]
    assert row.source == "judge_prompts.jsonl"
    text = judge_prompt_preview(row, {"question": "Q", "answer_1": "A1", "answer_2": "A2"})
    expected = (
        record["prompt_template"].format(question="Q", answer_a="A1", answer_b="A2").strip() + "\n"
    )
    assert text == expected


def test_a_fastchat_prompt_keeps_literal_braces_and_reads_mt_bench_verdicts(tmp_path):
    line = {
        "name": "pair-v2",
        "type": "pairwise",
        "system_prompt": "Output [[A]], [[B]] or [[C]].",
        # Doubled braces are literal ones in Python's format syntax, which FastChat uses.
        "prompt_template": "[Q]\n{question}\n{{literal}} {{% not jinja %}}\n"
        "[A]\n{answer_a}\n[B]\n{answer_b}",
        "description": "MT-Bench style",
        "category": "general",
        "output_format": "[[A]]",
    }
    path = _write(tmp_path, "judge_prompts.jsonl", json.dumps(line) + "\n")
    (row,) = judge_prompt_load(path)
    assert row.verdict_format == "brackets_abc"
    text = judge_prompt_preview(row, {"question": "Q", "answer_1": "x", "answer_2": "y"})
    assert "{literal} {% not jinja %}" in text
    assert verdicts.parse_pairwise(row.verdict_format, "so [[B]]") == verdicts.SECOND


def test_a_multi_turn_fastchat_prompt_that_hides_turns_is_refused_naming_them(tmp_path):
    # Multi-turn prompts load (tests/judging/test_fastchat_formats.py); one that shows the
    # first question alone would hide the answers it is meant to judge.
    line = {"name": "pair-v2-multi-turn", "type": "pairwise", "prompt_template": "{question_1}"}
    path = _write(tmp_path, "p.jsonl", json.dumps(line) + "\n")
    with pytest.raises(ImportFormatError, match=r"p.jsonl, line 1: template: the prompt never"):
        judge_prompt_load(path)


def test_a_yaml_file_loads_a_grading_prompt_with_its_score_range(tmp_path):
    path = _write(
        tmp_path,
        "grader.yaml",
        "name: ten_point\nkind: grading\nscore_min: 1\nscore_max: 10\n"
        "system_prompt: 採点者です。\n"
        "template: |\n  {{ question }}\n  {{ answer }}\n"
        "  {% if reference %}参考: {{ reference }}{% endif %}\n"
        "  1 から 10 で採点し、最後に [[点数]] と書く。\n",
    )
    (row,) = judge_prompt_load(path)
    assert (row.kind, row.verdict_format, row.score_min, row.score_max) == (
        "grading",
        "score",
        1,
        10,
    )
    assert judge_prompt_for("ten_point", grading=True) == row


def test_a_text_file_takes_its_fields_from_front_matter_and_its_template_from_the_body(tmp_path):
    path = _write(
        tmp_path,
        "short.j2",
        "---\nname: front\nverdict_format: brackets_abc\n---\n"
        "問: {{ question }}\n一: {{ answer_1 }}\n二: {{ answer_2 }}\n",
    )
    (row,) = judge_prompt_load(path)
    assert row.template == "問: {{ question }}\n一: {{ answer_1 }}\n二: {{ answer_2 }}\n"
    assert (row.kind, row.verdict_format, row.source) == ("pairwise", "brackets_abc", "short.j2")


def test_loading_a_name_again_edits_an_unused_version_and_adds_one_after_a_used_one(tmp_path):
    path = _write(tmp_path, "short.json", json.dumps(SHORT))
    (first,) = judge_prompt_load(path)
    path.write_text(json.dumps({**SHORT, "system_prompt": "二度目"}), encoding="utf-8")
    (second,) = judge_prompt_load(path)
    assert (second.pk, second.version, second.system_prompt) == (first.pk, 1, "二度目")
    _used(second)
    path.write_text(json.dumps({**SHORT, "system_prompt": "三度目"}), encoding="utf-8")
    (third,) = judge_prompt_load(path)
    assert third.version == 2
    assert JudgePrompt.objects.get(pk=first.pk).system_prompt == "二度目"


def test_a_json_list_loads_every_prompt_or_only_the_ones_asked_for(tmp_path):
    other = {**SHORT, "name": "other_pairwise"}
    path = _write(tmp_path, "two.json", json.dumps([SHORT, other]))
    assert [r.name for r in judge_prompt_load(path, only=["other_pairwise"])] == ["other_pairwise"]
    assert [r.name for r in judge_prompt_load(path)] == ["short_pairwise", "other_pairwise"]
    renamed = _write(tmp_path, "one.json", json.dumps(SHORT))
    assert judge_prompt_load(renamed, name="renamed")[0].name == "renamed"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.toml", "name = 1", "p.toml: has an unknown extension '.toml'"),
        ("p.json", "{", "p.json: not valid JSON"),
        ("p.json", "[]", "p.json: holds no judge prompt"),
        ("p.json", json.dumps([1]), "p.json, line 1: expected an object of judge prompt fields"),
        ("p.json", json.dumps({**SHORT, "colour": "red"}), "unknown key(s) ['colour']"),
        ("p.json", json.dumps({**SHORT, "score_max": "5"}), "'score_max' must be an integer"),
        ("p.json", json.dumps({**SHORT, "template": 5}), "'template' must be text, got int"),
        (
            "p.jsonl",
            json.dumps(SHORT)
            + "\n"
            + json.dumps({**SHORT, "name": "b", "template": "{{ question }}"}),
            "p.jsonl, line 2: template: the prompt never shows: answer_1, answer_2",
        ),
        (
            "p.jsonl",
            json.dumps(SHORT) + "\n" + json.dumps(SHORT),
            "p.jsonl, line 2: a second prompt named 'short_pairwise' (the first is on line 1)",
        ),
        ("p.yaml", "name: [unclosed", "p.yaml, line 1: not valid YAML"),
        ("p.txt", "no front matter", "p.txt, line 1: a text judge prompt starts with front matter"),
        ("p.txt", "---\nname: x\n", "a text judge prompt starts with front matter"),
        (
            "p.json",
            json.dumps({**SHORT, "kind": "grading", "verdict_format": "brackets_abc"}),
            "verdict_format: a grading prompt reads one of: score",
        ),
        ("p.json", b"\xff\xfe{}", "p.json, line 1: is not UTF-8 text"),
    ],
)
def test_a_bad_file_is_refused_naming_file_line_and_problem_and_nothing_is_written(
    tmp_path, name, content, message
):
    before = _rows()
    path = _write(tmp_path, name, content)
    with pytest.raises(ImportFormatError) as caught:
        judge_prompt_load(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(path))
    assert _rows() == before


def test_a_file_whose_prompt_would_change_a_names_kind_writes_nothing(tmp_path):
    before = _rows()
    grading = {
        "name": "new_grader",
        "kind": "grading",
        "template": "{{ question }} {{ answer }}",
    }
    clash = {**grading, "name": "ja_pairwise"}
    path = _write(tmp_path, "p.json", json.dumps([grading, clash]))
    with pytest.raises(ServiceError, match="keeps its kind"):
        judge_prompt_load(path)
    assert _rows() == before  # new_grader, stored first, was rolled back too


def test_the_command_prints_the_row_and_refuses_a_bad_file(tmp_path, capsys):
    call_command("load_judge_prompt", str(RAKUDA_PROMPTS), "--name", "rakuda_ja")
    assert "judge prompt rakuda_ja v1 (pairwise, last_line_123)" in capsys.readouterr().out
    assert JudgePrompt.objects.get(name="rakuda_ja").source == "judge_prompts.jsonl"
    bad = _write(tmp_path, "bad.json", json.dumps({**SHORT, "template": "{{ answer_1 }}"}))
    with pytest.raises(CommandError, match="bad.json: template: the prompt never shows"):
        call_command("load_judge_prompt", str(bad))
