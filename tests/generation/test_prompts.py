"""The one renderer: every preset renders conversations the way its model card writes them, and
a model's continuation becomes the reply alone.

The expected strings are written out by hand from the cards' documented formats (sources in the
docstring of generation/engine/presets.py), not produced by the code under test.
"""

from __future__ import annotations

import pytest

from generation.engine import render
from generation.engine.examples import join_instruction
from generation.engine.presets import PRESETS
from generation.engine.render import (
    NO_CHAT_TEMPLATE,
    Template,
    chat_messages,
    conversation,
    encode_prompt,
    extract_reply,
    render_example,
    render_prompt,
)

Q1 = "日本で一番高い山は何ですか。"
A1 = "富士山です。\n標高は3776メートルです。"
Q2 = "では、二番目に高い山は？"
TWO_LINES = "次の文を要約してください。\n今日は晴れです。"

ELYZA_SYSTEM = "あなたは誠実で優秀な日本人のアシスタントです。"
LLM_JP_PREAMBLE = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
ALPACA_JA_PREAMBLE = (
    "以下は、ある作業を記述した指示です。依頼を適切に完了させる回答を書いてください。"
)

# name -> (one turn: [Q1]; two turns: [Q1], [A1], [Q2]), as each card writes its prompt.
EXPECTED = {
    # LINE japanese-large-lm-3.6b-instruction-sft: f"ユーザー: {text}\nシステム: "
    "line_sft": (
        "ユーザー: 日本で一番高い山は何ですか。\nシステム: ",
        "ユーザー: 日本で一番高い山は何ですか。\n"
        "システム: 富士山です。\n標高は3776メートルです。\n"
        "ユーザー: では、二番目に高い山は？\nシステム: ",
    ),
    # rinna japanese-gpt-neox-3.6b-instruction-sft: utterances "{speaker}: {text}" joined by
    # "<NL>", newlines inside text written as "<NL>", then "<NL>システム: ".
    "rinna": (
        "ユーザー: 日本で一番高い山は何ですか。<NL>システム: ",
        "ユーザー: 日本で一番高い山は何ですか。<NL>"
        "システム: 富士山です。<NL>標高は3776メートルです。<NL>"
        "ユーザー: では、二番目に高い山は？<NL>システム: ",
    ),
    # cyberagent/calm2-7b-chat: "USER: {user_input}\nASSISTANT: "
    "calm2": (
        "USER: 日本で一番高い山は何ですか。\nASSISTANT: ",
        "USER: 日本で一番高い山は何ですか。\n"
        "ASSISTANT: 富士山です。\n標高は3776メートルです。\n"
        "USER: では、二番目に高い山は？\nASSISTANT: ",
    ),
    # llm-jp instruct: the preamble, "\n\n### 指示:\n{instruction}", "\n\n### 応答:\n"
    "llm_jp": (
        "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
        "\n\n### 指示:\n日本で一番高い山は何ですか。\n\n### 応答:\n",
        "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
        "\n\n### 指示:\n日本で一番高い山は何ですか。"
        "\n\n### 応答:\n富士山です。\n標高は3776メートルです。"
        "\n\n### 指示:\nでは、二番目に高い山は？\n\n### 応答:\n",
    ),
    # ELYZA-japanese-Llama-2-7b-instruct: "{bos}[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{text}
    # [/INST] "; Llama-2 closes each answered exchange with " {eos}" and opens the next with a BOS.
    "elyza_llama2": (
        "<s>[INST] <<SYS>>\nあなたは誠実で優秀な日本人のアシスタントです。\n<</SYS>>\n\n"
        "日本で一番高い山は何ですか。 [/INST] ",
        "<s>[INST] <<SYS>>\nあなたは誠実で優秀な日本人のアシスタントです。\n<</SYS>>\n\n"
        "日本で一番高い山は何ですか。 [/INST] 富士山です。\n標高は3776メートルです。 </s>"
        "<s>[INST] では、二番目に高い山は？ [/INST] ",
    ),
    # Alpaca's layout as the Japanese translations write it.
    "alpaca_ja": (
        "以下は、ある作業を記述した指示です。依頼を適切に完了させる回答を書いてください。"
        "\n\n### 指示:\n日本で一番高い山は何ですか。\n\n### 応答:\n",
        "以下は、ある作業を記述した指示です。依頼を適切に完了させる回答を書いてください。"
        "\n\n### 指示:\n日本で一番高い山は何ですか。"
        "\n\n### 応答:\n富士山です。\n標高は3776メートルです。"
        "\n\n### 指示:\nでは、二番目に高い山は？\n\n### 応答:\n",
    ),
    # The question alone; a reply follows it directly; exchanges separated by a blank line.
    "plain": (
        "日本で一番高い山は何ですか。",
        "日本で一番高い山は何ですか。富士山です。\n標高は3776メートルです。"
        "\n\nでは、二番目に高い山は？",
    ),
    # The tiny tokenizer's own chat template writes the LINE layout.
    "chat_template": (
        "ユーザー: 日本で一番高い山は何ですか。\nシステム: ",
        "ユーザー: 日本で一番高い山は何ですか。\n"
        "システム: 富士山です。\n標高は3776メートルです。\n"
        "ユーザー: では、二番目に高い山は？\nシステム: ",
    ),
}

ONE_TURN = conversation([Q1], [])
TWO_TURNS = conversation([Q1, Q2], [A1])


def preset(name: str) -> Template:
    return render.template_from(name, 1, PRESETS[name])


def test_every_preset_has_expected_strings():
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_preset_renders_one_turn_as_its_card_writes_it(name, tokenizer):
    assert render_prompt(preset(name), ONE_TURN, tokenizer) == EXPECTED[name][0]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_preset_renders_two_turns_as_its_card_writes_them(name, tokenizer):
    assert render_prompt(preset(name), TWO_TURNS, tokenizer) == EXPECTED[name][1]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_training_example_is_the_prompt_then_the_reply_then_the_end_token(name, tokenizer):
    whole = conversation([Q1, Q2], [A1, "北岳です。"])
    prompt, target = render_example(preset(name), whole, tokenizer)
    # The prompt is exactly what generation renders for the same earlier turns.
    assert prompt == EXPECTED[name][1]
    assert target.endswith("</s>") and target.count("</s>") == 1
    assert "北岳です。" in target


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prompt_tokens_are_the_rendered_text_with_nothing_added(name, tokenizer):
    ids = encode_prompt(preset(name), TWO_TURNS, tokenizer)
    assert ids == tokenizer(EXPECTED[name][1], add_special_tokens=False)["input_ids"]
    # A BOS appears only where the template writes one (Llama-2 writes one per exchange).
    assert ids.count(tokenizer.bos_token_id) == EXPECTED[name][1].count("<s>")


def test_rinna_writes_every_newline_of_the_question_as_nl():
    text = render_prompt(preset("rinna"), conversation([TWO_LINES], []))
    assert text == "ユーザー: 次の文を要約してください。<NL>今日は晴れです。<NL>システム: "
    assert "\n" not in text


def test_rinna_training_target_writes_newlines_as_nl_and_ends_with_eos(tokenizer):
    _, target = render_example(preset("rinna"), conversation([Q1], ["一行目\n二行目"]), tokenizer)
    assert target == "一行目<NL>二行目</s>"


def test_llama2_target_keeps_the_single_end_token_its_template_writes(tokenizer):
    _, target = render_example(preset("elyza_llama2"), conversation([Q1], ["富士山。"]), tokenizer)
    assert target == "富士山。 </s>"


def test_text_after_a_reply_is_rendered_in_history_and_trained_after_the_reply(tokenizer):
    template = Template(
        name="closing",
        version=1,
        kind="turns",
        user_template="質問: {content}\n",
        assistant_template="回答: {content}<END>",
        turn_separator="\n",
        stop_strings=("<END>",),
    )
    whole = conversation(["Q1", "Q2"], ["A1", "A2"])
    prompt, target = render_example(template, whole, tokenizer)
    assert prompt == "質問: Q1\n回答: A1<END>\n質問: Q2\n回答: "
    assert target == "A2<END></s>"
    assert extract_reply(template, "A2<END>\n質問: Q3") == ("A2", True)


@pytest.mark.slow
def test_a_chat_template_that_fails_says_which_template_failed(tokenizer):
    import copy

    refusing = copy.deepcopy(tokenizer)
    refusing.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    template = render.template_from(
        "chat_template", 3, {**PRESETS["chat_template"], "system_prompt": "丁寧に。"}
    )
    with pytest.raises(ValueError) as error:
        render_prompt(template, ONE_TURN, refusing)
    assert str(error.value) == (
        "template chat_template v3: the tokenizer's chat template failed: no system role"
    )


def test_a_system_message_replaces_the_templates_system_prompt():
    messages = [{"role": "system", "content": "簡潔に答えてください。"}, *ONE_TURN]
    assert render_prompt(preset("llm_jp"), messages) == (
        "簡潔に答えてください。\n\n### 指示:\n日本で一番高い山は何ですか。\n\n### 応答:\n"
    )


def test_without_a_tokenizer_llama2_has_no_bos_text():
    assert render_prompt(preset("elyza_llama2"), ONE_TURN).startswith("[INST] <<SYS>>")


def test_chat_template_needs_a_tokenizer():
    with pytest.raises(ValueError) as error:
        render_prompt(preset("chat_template"), ONE_TURN)
    assert str(error.value) == NO_CHAT_TEMPLATE


def test_chat_template_needs_a_tokenizer_that_has_a_template():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError) as error:
        render_prompt(preset("chat_template"), ONE_TURN, NoTemplate())
    assert str(error.value) == NO_CHAT_TEMPLATE


# --- conversations -----------------------------------------------------------------------------


def test_a_conversation_alternates_user_turns_and_replies():
    assert conversation(["a", "b"], ["x"]) == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "b"},
    ]
    assert len(conversation(["a", "b"], ["x", "y"])) == 4


@pytest.mark.parametrize(
    ("turns", "replies", "message"),
    [
        ([], [], "a conversation needs at least one user turn"),
        (["a"], ["x", "y"], "1 user turn(s) take 1 or 0 replies, not 2"),
        (["a", "b", "c"], [], "3 user turn(s) take 3 or 2 replies, not 0"),
    ],
)
def test_a_conversation_with_the_wrong_number_of_replies_is_refused(turns, replies, message):
    with pytest.raises(ValueError) as error:
        conversation(turns, replies)
    assert str(error.value) == message


def test_a_prompt_must_end_with_a_user_turn_and_an_example_with_a_reply():
    whole = conversation([Q1], [A1])
    with pytest.raises(ValueError, match="must end with a user turn"):
        render_prompt(preset("line_sft"), whole)
    with pytest.raises(ValueError, match="must end with an assistant reply"):
        render_example(preset("line_sft"), ONE_TURN, None)


def test_messages_out_of_order_are_refused():
    messages = [{"role": "assistant", "content": "x"}, {"role": "user", "content": "a"}]
    with pytest.raises(ValueError) as error:
        render_prompt(preset("line_sft"), messages)
    assert "message 0 is 'assistant'" in str(error.value)


def test_endpoint_messages_carry_the_system_prompt_then_the_turns_as_written():
    assert chat_messages(preset("elyza_llama2"), TWO_TURNS) == [
        {"role": "system", "content": ELYZA_SYSTEM},
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},  # newlines stay newlines: the server renders
        {"role": "user", "content": Q2},
    ]
    assert chat_messages(preset("rinna"), ONE_TURN) == [{"role": "user", "content": Q1}]


# --- replies -----------------------------------------------------------------------------------


def test_a_reply_is_cut_where_the_model_starts_the_next_user_turn():
    generated = "富士山です。\nユーザー: では二番目は？\nシステム: 北岳です。"
    assert extract_reply(preset("line_sft"), generated) == ("富士山です。", True)


def test_a_reply_is_cut_at_a_full_width_colon_user_turn_too():
    assert extract_reply(preset("line_sft"), "富士山です。ユーザー：ありがとう") == (
        "富士山です。",
        True,
    )


def test_rinna_reply_turns_nl_back_into_newlines_and_is_cut_at_the_next_turn():
    template = preset("rinna")
    assert extract_reply(template, "一行目<NL>二行目") == ("一行目\n二行目", False)
    assert extract_reply(template, "富士山です。<NL>ユーザー: ありがとう") == (
        "富士山です。",
        True,
    )


def test_each_presets_stop_strings_cut_its_own_next_turn():
    assert extract_reply(preset("calm2"), "富士山です。\nUSER: 次は？") == ("富士山です。", True)
    assert extract_reply(preset("llm_jp"), "富士山です。\n\n### 指示:\n次") == (
        "富士山です。",
        True,
    )
    assert extract_reply(preset("elyza_llama2"), " 富士山です。 [INST] 次") == (
        "富士山です。",
        True,
    )


def test_a_reply_is_stripped_and_one_without_a_stop_string_is_kept_whole():
    assert extract_reply(preset("line_sft"), "  富士山です。\n\n") == ("富士山です。", False)
    assert extract_reply(preset("plain"), "一行目\n二行目") == ("一行目\n二行目", False)


def test_a_reply_never_echoes_the_prompt_it_continues():
    generated = f"\nユーザー: {Q1}\nシステム: 富士山です。"
    assert extract_reply(preset("line_sft"), generated) == ("", True)


# --- instruction data --------------------------------------------------------------------------


def test_instruction_and_input_are_joined_by_a_blank_line():
    assert join_instruction(" 要約してください。 ", " 本文 ") == "要約してください。\n\n本文"


def test_instruction_without_input_stays_alone():
    assert join_instruction("要約してください。", "") == "要約してください。"
    assert join_instruction("要約してください。", None) == "要約してください。"
