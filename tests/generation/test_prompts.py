"""Prompt formats: how a question becomes model input and a continuation becomes an answer."""

from __future__ import annotations

import pytest

from generation import prompts
from generation.prompts import (
    CHAT_TEMPLATE,
    LINE_SFT,
    NO_CHAT_TEMPLATE,
    PLAIN,
    RINNA,
    UNKNOWN_FORMAT,
    extract_reply,
    format_answer,
    format_prompt,
    join_instruction,
)

QUESTION = "日本で一番高い山は何ですか。"
TWO_LINES = "次の文を要約してください。\n今日は晴れです。"


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from generation.engine.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_line_sft_prompt_is_user_line_then_system_tag():
    assert format_prompt(LINE_SFT, QUESTION) == f"ユーザー: {QUESTION}\nシステム: "


def test_line_sft_keeps_newlines_in_the_question():
    assert format_prompt(LINE_SFT, TWO_LINES) == f"ユーザー: {TWO_LINES}\nシステム: "


def test_rinna_prompt_writes_newlines_as_nl_and_separates_turns_with_nl():
    assert format_prompt(RINNA, TWO_LINES) == (
        "ユーザー: 次の文を要約してください。<NL>今日は晴れです。<NL>システム: "
    )
    assert "\n" not in format_prompt(RINNA, TWO_LINES)


def test_rinna_answer_is_written_with_nl_for_training():
    assert format_answer(RINNA, "一行目\n二行目") == "一行目<NL>二行目"


def test_rinna_reply_turns_nl_back_into_newlines():
    assert extract_reply(RINNA, "一行目<NL>二行目") == "一行目\n二行目"


def test_rinna_reply_is_cut_at_the_next_user_turn_written_with_nl():
    assert extract_reply(RINNA, "富士山です。<NL>ユーザー: ありがとう") == "富士山です。"


def test_other_formats_keep_the_answer_as_is_for_training():
    for fmt in (LINE_SFT, CHAT_TEMPLATE, PLAIN):
        assert format_answer(fmt, "一行目\n二行目") == "一行目\n二行目"


def test_plain_prompt_is_the_question_itself():
    assert format_prompt(PLAIN, QUESTION) == QUESTION


@pytest.mark.slow
def test_chat_template_renders_the_tiny_tokenizers_template(tiny_tokenizer):
    # The tiny tokenizer's template renders a user turn as the LINE format does.
    assert format_prompt(CHAT_TEMPLATE, QUESTION, tiny_tokenizer) == format_prompt(
        LINE_SFT, QUESTION
    )


@pytest.mark.slow
def test_chat_template_renders_earlier_turns_too(tiny_tokenizer):
    text = tiny_tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "こんにちは"},
            {"role": "assistant", "content": "こんにちは。"},
            {"role": "user", "content": QUESTION},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == f"ユーザー: こんにちは\nシステム: こんにちは。\nユーザー: {QUESTION}\nシステム: "


def test_chat_template_needs_a_tokenizer():
    with pytest.raises(ValueError) as error:
        format_prompt(CHAT_TEMPLATE, QUESTION)
    assert str(error.value) == NO_CHAT_TEMPLATE


def test_chat_template_needs_a_tokenizer_that_has_a_template():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError) as error:
        format_prompt(CHAT_TEMPLATE, QUESTION, NoTemplate())
    assert str(error.value) == NO_CHAT_TEMPLATE


def test_reply_is_cut_where_the_model_starts_the_next_user_turn():
    generated = "富士山です。\nユーザー: では二番目は？\nシステム: 北岳です。"
    assert extract_reply(LINE_SFT, generated) == "富士山です。"


def test_reply_is_cut_at_a_full_width_colon_user_turn_too():
    assert extract_reply(LINE_SFT, "富士山です。ユーザー：ありがとう") == "富士山です。"


def test_reply_is_stripped_of_surrounding_whitespace():
    assert extract_reply(LINE_SFT, "  富士山です。\n\n") == "富士山です。"


def test_reply_never_echoes_the_prompt_it_continues():
    # The engine decodes only new tokens; a model that repeats a user turn is cut before it.
    generated = f"\nユーザー: {QUESTION}\nシステム: 富士山です。"
    assert extract_reply(LINE_SFT, generated) == ""
    assert QUESTION not in extract_reply(PLAIN, f"富士山です。ユーザー: {QUESTION}")


def test_reply_without_a_next_turn_is_kept_whole():
    assert extract_reply(CHAT_TEMPLATE, "一行目\n二行目") == "一行目\n二行目"


@pytest.mark.parametrize(
    "call",
    [
        lambda: format_prompt("alpaca", QUESTION),
        lambda: format_answer("alpaca", "答え"),
        lambda: extract_reply("alpaca", "答え"),
    ],
    ids=["format_prompt", "format_answer", "extract_reply"],
)
def test_unknown_format_is_refused_with_the_known_formats_named(call):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == UNKNOWN_FORMAT.format(fmt="alpaca")
    for fmt in prompts.FORMATS:
        assert fmt in str(error.value)


def test_instruction_and_input_are_joined_by_a_blank_line():
    assert join_instruction(" 要約してください。 ", " 本文 ") == "要約してください。\n\n本文"


def test_instruction_without_input_stays_alone():
    assert join_instruction("要約してください。", "") == "要約してください。"
    assert join_instruction("要約してください。", None) == "要約してください。"
