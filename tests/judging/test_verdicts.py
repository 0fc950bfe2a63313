"""The judge engine alone (no Django, no database): judge prompts rendered and checked, and
judges' outputs read back as verdicts in each format, unparsable ones included."""

from __future__ import annotations

import dataclasses

import pytest
from jinja2 import TemplateError

from judging.engine.presets import JA_GRADING, JA_PAIRWISE
from judging.engine.verdicts import (
    BRACKETS_ABC,
    FIRST,
    LAST_LINE_123,
    SECOND,
    TIE,
    in_comparison_terms,
    parse_pairwise,
    parse_score,
    problems,
    render,
)


@pytest.mark.parametrize(
    "output, said",
    [
        ("回答1の方が丁寧です。\n1", FIRST),
        ("理由: 回答2の方が正確です。\n2\n", SECOND),
        ("どちらも同じくらいです。\n\n3\n\n", TIE),
        ("説明。\n判定: 2", SECOND),
        ("説明。\n**1**", FIRST),
        ("説明。\n[3]。", TIE),
        ("説明。\n２", SECOND),  # full-width digit
        ("Verdict: 1", FIRST),
        ("最終判定：３", TIE),
        ("回答1が良いので 1 です", None),  # the last line is not the digit alone
        ("1\n回答1の方が良いと思います。", None),  # the digit is not on the last line
        ("4", None),
        ("", None),
        ("どちらとも言えません。", None),
    ],
)
def test_last_line_verdicts(output, said):
    assert parse_pairwise(LAST_LINE_123, output) == said


@pytest.mark.parametrize(
    "output, said",
    [
        ("Assistant A is better.\n[[A]]", FIRST),
        ("[[A]] at first, but on reflection [[B]]", SECOND),
        ("Both are equal. [[C]]", TIE),
        ("［［Ａ］］", FIRST),  # full-width brackets and letter read as ASCII
        ("[A] is better", None),
        ("[[D]]", None),
        ("no verdict at all", None),
    ],
)
def test_bracket_verdicts(output, said):
    assert parse_pairwise(BRACKETS_ABC, output) == said


def test_a_grading_format_is_not_a_pairwise_one():
    with pytest.raises(ValueError, match="not a pairwise verdict format"):
        parse_pairwise("score", "1")


@pytest.mark.parametrize(
    "output, score",
    [
        ("よく書けています。\n評価: 4", 4),
        ("Rating: [[5]]", 5),
        ("4/5", 4),  # the scale after the slash is not the score
        ("評価: ３", 3),
        ("1から5で言えば、評価は2です。\n理由は上の通り。", 2),  # the last line with a score
        ("評価: 7", None),  # out of range
        ("評価: 0", None),
        ("採点できません。", None),
        ("評価: 4.5", None),
    ],
)
def test_scores(output, score):
    assert parse_score(output, 1, 5) == score


def test_a_verdict_on_the_shown_order_is_read_in_the_comparisons_terms():
    assert in_comparison_terms(FIRST, "a") == "a"
    assert in_comparison_terms(SECOND, "a") == "b"
    assert in_comparison_terms(FIRST, "b") == "b"
    assert in_comparison_terms(SECOND, "b") == "a"
    assert in_comparison_terms(TIE, "a") == in_comparison_terms(TIE, "b") == "tie"


def test_render_fills_the_shipped_prompts_and_leaves_out_what_a_question_lacks():
    text = render(
        JA_PAIRWISE, question="質問です", answer_1="一つ目", answer_2="二つ目", criteria="正確さ"
    )
    assert "[質問]\n質問です" in text and "[回答1]\n一つ目" in text and "[回答2]\n二つ目" in text
    assert "正確さ" in text and "模範解答" not in text  # no reference: its block is left out
    graded = render(JA_GRADING, question="質問", answer="答え", reference="模範")
    assert "[回答]\n答え" in graded and "模範解答" in graded and "採点基準" not in graded
    with pytest.raises(ValueError, match="unknown variables"):
        render(JA_GRADING, question="q", answer_1="a")


def test_the_shipped_prompts_have_no_problems():
    assert problems(JA_PAIRWISE) == {} and problems(JA_GRADING) == {}


def test_problems_name_the_field_that_is_wrong():
    swap = dataclasses.replace
    assert "verdict_format" in problems(swap(JA_PAIRWISE, verdict_format="score"))
    assert "score_max" in problems(swap(JA_GRADING, score_min=5, score_max=5))
    assert problems(swap(JA_PAIRWISE, template="{{ question }} {{ answer_1 }}")) == {
        "template": "the prompt never shows: answer_2"
    }
    broken = problems(swap(JA_PAIRWISE, template="{% if %}"))
    assert broken["template"].startswith("the Jinja source failed")
    assert "kind" in problems(swap(JA_PAIRWISE, kind="ranking"))
    with pytest.raises(TemplateError):  # a misspelt variable is an error, not an empty string
        render(swap(JA_PAIRWISE, template="{{ questoin }}"), question="q")
