"""FastChat's published formats: a judge_prompts.jsonl (written here by the team in that format,
in our own words: eight prompts, pairwise and single, with and without a reference, one- and
two-turn) loaded as it is, each verdict form parsed, and model_judgment files (pairwise and
single) imported as a judge's verdicts and grades, kept apart from people's votes."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Vote
from generation.importers import ImportFormatError
from judging.engine import verdicts
from judging.imports import UNKNOWN_PROMPT, judgments_import
from judging.models import JudgePrompt, JudgeRun, Judgment
from judging.prompts import as_judge_template, judge_prompt_load
from judging.runs import judge_run_create, judge_run_execute
from tests.judging.test_whole_conversations import REPLIES, TURNS, two_turn_study

pytestmark = pytest.mark.django_db

SYSTEM_PAIR = "You compare two assistants fairly. End with [[A]], [[B]] or [[C]] for a tie."
SYSTEM_SINGLE = 'You grade one assistant from 1 to 10. End with "Rating: [[n]]".'
PAIR_ONE = "[Question]\n{question}\n\n[Assistant A]\n{answer_a}\n\n[Assistant B]\n{answer_b}\n"
PAIR_TWO = (
    "[A's chat]\nUser: {question_1}\nA: {answer_a_1}\nUser: {question_2}\nA: {answer_a_2}\n\n"
    "[B's chat]\nUser: {question_1}\nB: {answer_b_1}\nUser: {question_2}\nB: {answer_b_2}\n"
)
SINGLE_ONE = "[Question]\n{question}\n\n[Answer]\n{answer}\n"
SINGLE_TWO = (
    "User: {question_1}\nAssistant: {answer_1}\nUser: {question_2}\nAssistant: {answer_2}\n"
)
WITH_REF_ONE = "[Reference]\n{ref_answer_1}\n\n"
WITH_REF_TWO = "[Reference 1]\n{ref_answer_1}\n[Reference 2]\n{ref_answer_2}\n\n"


def _line(name, kind, template, category, output_format) -> dict:
    return {
        "name": name,
        "type": kind,
        "system_prompt": SYSTEM_PAIR if kind == "pairwise" else SYSTEM_SINGLE,
        "prompt_template": template,
        "description": f"the team's {name}",
        "category": category,
        "output_format": output_format,
    }


PROMPTS = [
    _line("pair-t", "pairwise", PAIR_ONE, "general", "[[A]]"),
    _line("pair-t-multi-turn", "pairwise", PAIR_TWO, "general", "[[A]]"),
    _line("pair-math-t", "pairwise", WITH_REF_ONE + PAIR_ONE, "math", "[[A]]"),
    _line("pair-math-t-multi-turn", "pairwise", WITH_REF_TWO + PAIR_TWO, "math", "[[A]]"),
    _line("single-t", "single", SINGLE_ONE, "general", "[[rating]]"),
    _line("single-t-multi-turn", "single", SINGLE_TWO, "general", "[[rating]]"),
    _line("single-math-t", "single", WITH_REF_ONE + SINGLE_ONE, "math", "[[rating]]"),
    _line("single-math-t-multi-turn", "single", WITH_REF_TWO + SINGLE_TWO, "math", "[[rating]]"),
    # Rakuda's file: a pairwise prompt read by its last line.
    _line("pair-ja-t", "pairwise", PAIR_ONE, "一般", "last"),
    # FastChat's pairwise-with-scores form: each answer rated, the higher wins.
    _line("pair-scores-t", "pairwise", PAIR_ONE, "general", "[[rating_a,rating_b]]"),
]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "judge_prompts.jsonl"
    path.write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PROMPTS), encoding="utf-8"
    )
    return path


def test_the_file_loads_as_it_is_with_type_reference_flag_and_output_format(prompt_file):
    rows = {row.name: row for row in judge_prompt_load(prompt_file)}
    assert set(rows) == {p["name"] for p in PROMPTS}
    for line in PROMPTS:
        row = rows[line["name"]]
        assert row.kind == ("pairwise" if line["type"] == "pairwise" else "grading")
        assert row.reference == ("ref_answer_1" in line["prompt_template"])
        assert row.multi_turn == ("question_1" in line["prompt_template"])
        assert row.category == line["category"]
        assert row.system_prompt == line["system_prompt"]
        assert (
            row.verdict_format
            == {
                "[[A]]": "brackets_abc",
                "[[rating]]": "brackets_rating",
                "last": "last_line_123",
                "[[rating_a,rating_b]]": "brackets_two_ratings",
            }[line["output_format"]]
        )
        if row.kind == "grading":
            assert (row.score_min, row.score_max) == (1, 10)


def test_one_prompt_of_the_file_loads_alone(prompt_file):
    (row,) = judge_prompt_load(prompt_file, only=["single-math-t-multi-turn"])
    assert row.multi_turn and row.reference


def test_a_multi_turn_prompt_renders_every_turn_in_place(prompt_file):
    rows = {row.name: row for row in judge_prompt_load(prompt_file)}
    turns = [
        {"question": "Q1", "answer_1": "A1", "answer_2": "B1", "reference": "R1"},
        {"question": "Q2", "answer_1": "A2", "answer_2": "B2", "reference": "R2"},
    ]
    text = verdicts.render(as_judge_template(rows["pair-math-t-multi-turn"]), turns=turns)
    assert text == (
        "[Reference 1]\nR1\n[Reference 2]\nR2\n\n"
        "[A's chat]\nUser: Q1\nA: A1\nUser: Q2\nA: A2\n\n"
        "[B's chat]\nUser: Q1\nB: B1\nUser: Q2\nB: B2\n"
    )
    single = [{"question": "Q1", "answer": "X1", "reference": ""}]
    text = verdicts.render(as_judge_template(rows["single-t"]), turns=single)
    assert text == "[Question]\nQ1\n\n[Answer]\nX1\n"


@pytest.mark.parametrize(
    ("name", "output", "expected"),
    [
        ("pair-t", "A explains more.\n[[A]]", verdicts.FIRST),
        ("pair-t", "Both fine at first, [[A]]... on reflection [[B]]", verdicts.SECOND),
        ("pair-t", "Equal. [[C]]", verdicts.TIE),
        ("pair-t", "I prefer A.", None),
        ("pair-ja-t", "回答1の方が良い。\n1", verdicts.FIRST),
        ("pair-ja-t", "判定: 3", verdicts.TIE),
        ("pair-scores-t", "A is complete, B misses a step. [[8,5]]", verdicts.FIRST),
        ("pair-scores-t", "First [[9, 4]]; on reflection [[6.5, 7]]", verdicts.SECOND),
        ("pair-scores-t", "Both good. [[7,7.05]]", verdicts.TIE),
        ("pair-scores-t", "Ａは８点、Ｂは６点。[[８，６]]", verdicts.FIRST),
        ("pair-scores-t", "A: 8, B: 5", None),
        ("single-t", "Clear and correct. Rating: [[8]]", 8),
        ("single-t", "Rating: [[8.5]]", 8.5),
        ("single-t", "Rating: [[11]]", None),
        ("single-t", "Rating: 8", None),
        ("single-math-t", "Wrong result. Rating: [[２]]", 2),
    ],
)
def test_each_verdict_form_is_read_by_its_prompts_format(prompt_file, name, output, expected):
    (row,) = judge_prompt_load(prompt_file, only=[name])
    if row.kind == JudgePrompt.Kind.PAIRWISE:
        assert verdicts.parse_pairwise(row.verdict_format, output) == expected
    else:
        got = verdicts.parse_grade(row.verdict_format, output, row.score_min, row.score_max)
        assert got == expected


def test_an_unknown_output_format_names_the_line_and_changes_nothing(tmp_path):
    path = tmp_path / "judge_prompts.jsonl"
    bad = _line("pair-v1-t", "pairwise", PAIR_ONE, "general", "[[winner]]")
    good = _line("pair-t", "pairwise", PAIR_ONE, "general", "[[A]]")
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(ImportFormatError) as refused:
        judge_prompt_load(path)
    assert "line 2" in str(refused.value) and "[[winner]]" in str(refused.value)
    assert not JudgePrompt.objects.filter(name="pair-t").exists()
    # The good one alone loads.
    assert judge_prompt_load(path, only=["pair-t"])[0].name == "pair-t"


# --- model_judgment files ----------------------------------------------------------------------


def _mt_study():
    """The two-turn study with MT-Bench-style question ids and a math category."""
    study = two_turn_study("mt")
    for n, question in enumerate(study.prompt_set.questions.order_by("position"), 81):
        question.external_id = str(n)
        question.category = "math" if n == 81 else "writing"
        question.save(update_fields=["external_id", "category"])
    return study


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _pair(qid, one, two, g1, g2, turn, prompt="pair-t-multi-turn"):
    return {
        "question_id": qid,
        "model_1": one,
        "model_2": two,
        "g1_winner": g1,
        "g2_winner": g2,
        "judge": ["gpt-4", prompt],
        "g1_user_prompt": f"game 1 of {qid}",
        "g1_judgment": "[[A]]",
        "g2_user_prompt": f"game 2 of {qid}",
        "g2_judgment": "[[B]]",
        "turn": turn,
        "tstamp": 1700000000.0,
    }


def test_a_pairwise_model_judgment_file_becomes_judge_verdicts_and_votes(prompt_file):
    judge_prompt_load(prompt_file)
    study = _mt_study()
    brief, thorough = "mt-brief", "mt-thorough"
    data = _jsonl(
        [
            _pair(81, brief, thorough, "model_2", "model_2", 1, "pair-math-t"),  # turn 1: skipped
            _pair(81, brief, thorough, "model_2", "model_2", 2, "pair-math-t-multi-turn"),
            _pair(82, thorough, brief, "model_1", "tie", 2),
        ]
    )
    result = judgments_import(data=data, filename="gpt-4_pair.jsonl", study=study)
    assert (result.added, result.skipped_turns, result.votes) == (4, 1, 4)
    (run,) = result.runs
    assert run.judge.name == "gpt-4" and run.status == JudgeRun.Status.SUCCEEDED
    assert run.source.startswith("gpt-4_pair.jsonl") and run.done == run.total == 4
    by_question = {}
    for row in Judgment.objects.filter(run=run).select_related("comparison__answer_a__run"):
        a_model = row.comparison.answer_a.run.model.name
        winner = {"a": a_model, "tie": "tie"}.get(
            row.verdict, brief if a_model == thorough else thorough
        )
        by_question.setdefault(row.comparison.question.external_id, set()).add(winner)
    assert by_question == {"81": {thorough}, "82": {thorough, "tie"}}
    math = Judgment.objects.get(run=run, comparison__question__external_id="81", first="a")
    assert math.prompt.name == "pair-math-t-multi-turn"
    # Judge votes, kept apart: none counts against K, none is a person's.
    votes = Vote.objects.filter(comparison__study=study)
    assert votes.count() == 4 and set(votes.values_list("voter", flat=True)) == {"judge"}
    assert all(v.imported for v in votes)
    assert set(study.comparisons.values_list("vote_count", flat=True)) == {0}

    again = judgments_import(data=data, filename="gpt-4_pair.jsonl", study=study)
    assert (again.added, again.already, again.votes) == (0, 4, 0)
    assert "were already imported" in again.message()
    assert Vote.objects.filter(comparison__study=study).count() == 4


def test_a_single_model_judgment_file_becomes_grades_on_the_prompts_scale(prompt_file):
    judge_prompt_load(prompt_file)
    study = _mt_study()
    rows = [
        {
            "question_id": 81,
            "model": "mt-thorough",
            "judge": ["gpt-4", "single-math-t"],
            "user_prompt": "u",
            "judgment": "Rating: [[9]]",
            "score": 9.0,
            "turn": 1,
        },
        {
            "question_id": 81,
            "model": "mt-thorough",
            "judge": ["gpt-4", "single-math-t-multi-turn"],
            "score": 7.5,
            "turn": 2,
        },
        {
            "question_id": 82,
            "model": "mt-brief",
            "judge": ["gpt-4", "single-t"],
            "score": -1,
            "turn": 1,
        },
        {
            "question_id": 82,
            "model": "mt-brief",
            "judge": ["gpt-4", "single-t-multi-turn"],
            "score": 4,
            "turn": 2,
        },
    ]
    result = judgments_import(data=_jsonl(rows), filename="gpt-4_single.jsonl", study=study)
    assert result.added == 4 and result.votes == 0
    (run,) = result.runs
    assert run.prompt.name == "single-t"  # the one-turn general prompt names the run
    got = {
        (j.answer.question.external_id, j.answer.turn): (j.verdict, j.score, j.prompt.name)
        for j in Judgment.objects.filter(run=run).select_related("answer__question", "prompt")
    }
    assert got == {
        ("81", 1): ("scored", 9.0, "single-math-t"),
        ("81", 2): ("scored", 7.5, "single-math-t-multi-turn"),
        ("82", 1): ("unparsable", None, "single-t"),
        ("82", 2): ("scored", 4.0, "single-t-multi-turn"),
    }
    assert not Vote.objects.filter(comparison__study=study).exists()


def test_a_judgment_file_with_an_unknown_prompt_names_the_line_and_changes_nothing(capsys):
    study = _mt_study()
    data = _jsonl([_pair(81, "mt-brief", "mt-thorough", "tie", "tie", 2, "pair-v2")])
    with pytest.raises(ImportFormatError) as refused:
        judgments_import(data=data, filename="gpt-4_pair.jsonl", study=study)
    assert str(refused.value) == "gpt-4_pair.jsonl, line 1: " + UNKNOWN_PROMPT.format(
        name="pair-v2"
    )
    assert not JudgeRun.objects.filter(study=study).exists()


def test_the_import_command_prints_one_line(prompt_file, tmp_path, capsys):
    judge_prompt_load(prompt_file)
    study = _mt_study()
    path = tmp_path / "gpt-4_pair.jsonl"
    path.write_bytes(_jsonl([_pair(82, "mt-thorough", "mt-brief", "model_1", "model_9", 2)]))
    with pytest.raises(CommandError) as refused:
        call_command("import_judgments", str(path), "--study", study.name)
    assert "line 1" in str(refused.value) and "\n" not in str(refused.value)
    path.write_bytes(_jsonl([_pair(82, "mt-thorough", "mt-brief", "model_1", "model_1", 2)]))
    call_command("import_judgments", str(path), "--study", study.name)
    assert "2 verdicts imported" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_a_fastchat_multi_turn_variant_is_chosen_for_two_turns(
    prompt_file, served_judge, canned_judge
):
    judge_prompt_load(prompt_file)
    study = two_turn_study()
    prompt = JudgePrompt.objects.get(name="pair-t")
    canned_judge.reply = lambda text, nth: "[[A]]"
    run = judge_run_create(judge=served_judge, study=study, prompt=prompt)
    assert run.multi_turn_prompt.name == "pair-t-multi-turn"
    judge_run_execute(run.pk)
    for text in canned_judge.prompts():
        assert any(turns[0] in text and turns[1] in text for turns in TURNS)
        assert sum(r[0] in text for replies in REPLIES.values() for r in replies) == 2
    assert set(Judgment.objects.filter(run=run).values_list("verdict", flat=True)) <= {"a", "b"}
