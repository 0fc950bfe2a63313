"""The Evol-Instruct engine alone: each elimination rule drops the case built for it and nothing
else, a clean evolution passes every rule, and operations are chosen reproducibly."""

from __future__ import annotations

import pytest

from evolution.engine import elimination as e
from evolution.engine import operations as ops

SETTINGS = e.rules_check({})
MARKERS = e.prompt_markers(ops.PRESETS.values())
SOURCE = [
    ("source row #1", "日本の四季について説明してください。"),
    ("source row #2", "雨が降る仕組みを説明してください。"),
]
PARENT = "日本の四季について説明してください。"
GOOD_ANSWER = "春は桜、夏は祭り、秋は紅葉、冬は雪景色が楽しめます。季節ごとに行事も変わります。"


# Each case: (parent, evolved, answer, instructions to compare with). Built so that exactly one
# rule drops it.
CASES = {
    e.NO_NEW_INFORMATION: (PARENT, "日本の四季について説明してください", GOOD_ANSWER, SOURCE[1:]),
    e.REFUSAL: (
        PARENT,
        "日本の四季について、代表的な行事を一つずつ挙げて三百字以内で説明してください。",
        "申し訳ありませんが、その質問にはお答えできません。",
        SOURCE[1:],
    ),
    e.EMPTY_ANSWER: (
        PARENT,
        "日本の四季について、季節ごとの食べ物を表にまとめてください。",
        "。。、 これは、です！",
        SOURCE[1:],
    ),
    e.COPIES_PROMPT: (
        PARENT,
        "#書き換えた指示# 日本の四季の行事を、月ごとに整理して紹介してください。",
        GOOD_ANSWER,
        SOURCE[1:],
    ),
    e.DUPLICATE: (
        PARENT,
        "雨が降る仕組みを説明してください！",
        "雲の中の水滴が集まって重くなると、雨として落ちてきます。",
        SOURCE[1:],
    ),
    # A rewrite that came back cut off (issue 27: 24 of 24 such were kept without a judge).
    e.FRAGMENT: (PARENT, "if", GOOD_ANSWER, SOURCE[1:]),
}
CLEAN = (
    PARENT,
    "日本の四季について、京都に住む人の一年の暮らしを例に、季節ごとの楽しみ方を説明してください。",
    GOOD_ANSWER,
    SOURCE[1:],
)


def _rule(name: str, case) -> e.Verdict:
    parent, evolved, answer, others = case
    return {
        e.NO_NEW_INFORMATION: lambda: e.no_new_information(parent, evolved, SETTINGS),
        e.REFUSAL: lambda: e.refusal(answer, SETTINGS),
        e.EMPTY_ANSWER: lambda: e.empty_answer(answer),
        e.COPIES_PROMPT: lambda: e.copies_prompt(parent, evolved, MARKERS),
        e.DUPLICATE: lambda: e.duplicate(evolved, others, SETTINGS),
        e.FRAGMENT: lambda: e.fragment(parent, evolved, SETTINGS),
    }[name]()


@pytest.mark.parametrize("rule", e.RULES)
def test_each_rule_drops_the_case_built_for_it_and_nothing_else(rule):
    dropped = {name for name, case in CASES.items() if _rule(rule, case).dropped}
    assert dropped == {rule}
    assert not _rule(rule, CLEAN).dropped
    verdict = _rule(rule, CASES[rule])
    assert verdict.rule == rule and verdict.detail


@pytest.mark.parametrize("rule", e.RULES)
def test_the_whole_pipeline_records_the_rule_of_each_crafted_case(rule):
    parent, evolved, answer, others = CASES[rule]
    verdict = e.instruction_verdict(
        parent, evolved, others=others, markers=MARKERS, settings=SETTINGS
    )
    if not verdict.dropped:
        verdict = e.answer_verdict(answer, SETTINGS)
    assert verdict.rule == rule


def test_a_clean_evolution_passes_every_rule():
    parent, evolved, answer, others = CLEAN
    assert not e.instruction_verdict(
        parent, evolved, others=others, markers=MARKERS, settings=SETTINGS
    ).dropped
    assert not e.answer_verdict(answer, SETTINGS).dropped


def test_no_new_information_cases_equal_contained_and_too_similar():
    assert e.no_new_information(PARENT, PARENT, SETTINGS).detail == "the same as its parent"
    assert e.no_new_information(PARENT, "日本の四季", SETTINGS).detail == "contained in its parent"
    slight = "日本の四季について詳しく説明してください。"  # 3 new characters
    assert e.no_new_information(PARENT, slight, SETTINGS).dropped
    # A run may ask for less: with min_new_chars 0 nothing similar is dropped for similarity.
    assert not e.no_new_information(PARENT, slight, e.rules_check({"min_new_chars": 0})).dropped


def test_the_judge_decides_what_the_copy_check_leaves_open():
    slight = "日本の四季について詳しく説明してください。"
    assert not e.no_new_information(PARENT, slight, SETTINGS, judge_gains=True).dropped
    new = CLEAN[1]
    said_no = e.no_new_information(PARENT, new, SETTINGS, judge_gains=False)
    assert said_no.dropped and "judge" in said_no.detail
    # A copy is a copy whatever the judge says.
    assert e.no_new_information(PARENT, PARENT, SETTINGS, judge_gains=True).dropped


def test_the_judge_prompt_and_its_verdict_reuse_the_judging_machinery():
    prompt = e.gain_judge_prompt("指示A本文", "指示B本文")
    assert "指示A本文" in prompt and "指示B本文" in prompt
    assert e.gain_judge_reads("新しい条件がある。\n1") is True
    assert e.gain_judge_reads("判定: 2") is False
    assert e.gain_judge_reads("わかりません") is None


def test_prompt_copy_ignores_words_the_parent_already_had():
    parent = "次の文を丁寧な表現に書き換えてください。"
    evolved = "次の文を、取引先に送る丁寧なメールの表現に書き換えてください。"
    assert not e.copies_prompt(parent, evolved, MARKERS).dropped
    assert e.copies_prompt(PARENT, "指示文: " + CLEAN[1], MARKERS).dropped


def test_markers_come_from_the_templates_themselves():
    markers = e.prompt_markers(["#元の指示#\n{{ instruction }}\n#新しい指示#"])
    assert "#元の指示#" in markers and "#新しい指示#" in markers
    assert ops.GIVEN in MARKERS and ops.REWRITTEN in MARKERS and "指示文" in MARKERS


def test_duplicates_exact_near_and_threshold():
    assert e.duplicate("雨が降る仕組みを説明してください。", SOURCE, SETTINGS).detail.startswith(
        "the same as"
    )
    exact_only = e.rules_check({"near_duplicate": 1.0})
    near = "雨が降る仕組みを説明してください！"
    assert e.duplicate(near, SOURCE, SETTINGS).dropped
    assert not e.duplicate(near + "詳しく", SOURCE, exact_only).dropped


def test_a_long_answer_that_apologises_in_passing_is_kept():
    long = "申し訳程度の説明ではなく、" + GOOD_ANSWER * 4
    assert not e.refusal(long, SETTINGS).dropped
    assert e.refusal("Sorry, I cannot help with that.", SETTINGS).dropped


def test_empty_answers_and_real_short_ones():
    for answer in ("", "   ", "。、！？", "the, a. OK", "それは、です。"):
        assert e.empty_answer(answer).dropped, answer
    for answer in ("富士山です。", "3776メートル", "Tokyo."):
        assert not e.empty_answer(answer).dropped, answer


def test_rule_settings_are_checked():
    with pytest.raises(ValueError, match="unknown elimination setting"):
        e.rules_check({"similarity_max": 0.5})
    with pytest.raises(ValueError, match="between 0.0 and 1.0"):
        e.rules_check({"near_duplicate": 2})


def test_operation_choice_is_reproducible_with_a_seed_and_covers_every_operation():
    first = [ops.choose_operation(7, r, k) for r in (1, 2) for k in range(200)]
    again = [ops.choose_operation(7, r, k) for r in (1, 2) for k in range(200)]
    other = [ops.choose_operation(8, r, k) for r in (1, 2) for k in range(200)]
    assert first == again and first != other
    assert set(first) == set(ops.OPERATIONS)
    # The round is part of the key: a kept instruction is not evolved the same way again.
    assert [ops.choose_operation(7, 1, k) for k in range(50)] != [
        ops.choose_operation(7, 2, k) for k in range(50)
    ]


def test_every_preset_renders_the_instruction_and_ends_with_the_answer_label():
    for op in ops.OPERATIONS:
        text = ops.render(ops.RewritePrompt(op, 1, ops.PRESETS[op]), "  猫の飼い方を教えて。 ")
        assert "猫の飼い方を教えて。" in text and text.endswith(ops.REWRITTEN)
        assert ops.problems(ops.PRESETS[op]) is None
    assert ops.problems("指示を書き換えて") == ops.MISSING_INSTRUCTION
    assert "failed" in ops.problems("{{ instruction ")
    assert "unsafe" in ops.problems("{{ instruction.__class__.__mro__ }}")


def test_the_evolved_instruction_is_taken_from_the_output():
    assert ops.evolved_from_output(f"{ops.REWRITTEN}\n「新しい指示です。」 ") == "新しい指示です。"


@pytest.mark.parametrize(
    "evolved",
    ["if", "と", "その。", "Here it is:", "「指示」", "   \n", "日本の四季とは"],
)
def test_fragments_are_dropped_with_or_without_a_judge(evolved):
    for judge_gains in (None, True):
        verdict = e.instruction_verdict(
            PARENT, evolved, others=[], markers=MARKERS, settings=SETTINGS, judge_gains=judge_gains
        )
        assert verdict.dropped and verdict.rule in (e.FRAGMENT, e.NO_NEW_INFORMATION), evolved
    assert e.fragment(PARENT, evolved, SETTINGS).dropped or evolved == "日本の四季とは"


def test_a_fragment_is_measured_against_its_parent_too():
    long_parent = (
        "次の文章を読んで、" + "登場人物の気持ちの変化を段落ごとに" * 4 + "説明してください。"
    )
    short = "登場人物を挙げてください。"
    verdict = e.fragment(long_parent, short, SETTINGS)
    assert verdict.dropped and "of its parent's" in verdict.detail
    assert not e.fragment(long_parent, short, {**SETTINGS, "min_length_ratio": 0.0}).dropped
    assert not e.fragment(PARENT, "秋の行事を三つ挙げてください。", SETTINGS).dropped
