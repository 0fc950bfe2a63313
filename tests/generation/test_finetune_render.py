"""Training examples: rendered by the one renderer with the model's template, the prompt
tokenized exactly as generation tokenizes it, the loss on the answer tokens only."""

from __future__ import annotations

import pytest

from generation.engine import render
from generation.engine.examples import (
    IGNORE_INDEX,
    AnswerOnlyCollator,
    Example,
    encode_example,
    example_messages,
    held_out_count,
    join_instruction,
    split_examples,
)
from generation.engine.loading import load_tokenizer
from generation.engine.presets import PRESETS
from generation.engine.train import (
    TrainConfig,
    lora_target_modules,
    qlora_unavailable,
    steps_for,
)
from tests.generation.conftest import fixture_examples

EXAMPLES = [
    Example(instruction="日本の首都はどこですか？", output="東京です。"),
    Example(
        instruction="次の文を要約してください。",
        input="今日は朝から雨が降っていた。\n午後には晴れた。",
        output="雨のち晴れの一日だった。\n短くまとめました。",
    ),
    Example(instruction="  前後に空白  ", input="  ", output="  答え  "),
]
TEXT_PRESETS = ["line_sft", "rinna", "calm2", "llm_jp", "elyza_llama2", "alpaca_ja", "plain"]


def preset(name: str) -> render.Template:
    return render.template_from(name, 1, PRESETS[name])


def prompt_of(example: Example) -> list[dict]:
    return render.conversation([join_instruction(example.instruction, example.input)], [])


@pytest.mark.parametrize("name", TEXT_PRESETS)
@pytest.mark.parametrize("example", EXAMPLES, ids=["no-input", "input-and-newlines", "spaces"])
def test_the_loss_mask_covers_exactly_the_answer_tokens(tokenizer, name, example):
    template = preset(name)
    rendered = encode_example(tokenizer, template, example, max_length=1024)
    ids, labels = rendered["input_ids"], rendered["labels"]
    # The prompt is tokenized exactly as generation tokenizes it...
    prompt_ids = render.encode_prompt(template, prompt_of(example), tokenizer)
    n = len(prompt_ids)
    assert ids[:n] == prompt_ids
    # ...every one of its tokens is masked, and nothing after it is.
    assert labels[:n] == [IGNORE_INDEX] * n
    assert labels[n:] == ids[n:]
    # What is left to learn is the reply as the template writes it, then one end token.
    _, target = render.render_example(template, example_messages(example), tokenizer)
    assert tokenizer.decode(ids[n:]) == target
    assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1


def test_rinna_examples_write_every_newline_as_nl(tokenizer):
    rendered = encode_example(tokenizer, preset("rinna"), EXAMPLES[1], max_length=1024)
    text = tokenizer.decode(rendered["input_ids"])
    assert "\n" not in text
    assert text == (
        "ユーザー: 次の文を要約してください。<NL><NL>"
        "今日は朝から雨が降っていた。<NL>午後には晴れた。<NL>"
        "システム: 雨のち晴れの一日だった。<NL>短くまとめました。</s>"
    )


def test_line_sft_examples_join_instruction_and_input_with_a_blank_line(tokenizer):
    rendered = encode_example(tokenizer, preset("line_sft"), EXAMPLES[1], max_length=1024)
    assert tokenizer.decode(rendered["input_ids"]) == (
        "ユーザー: 次の文を要約してください。\n\n"
        "今日は朝から雨が降っていた。\n午後には晴れた。\nシステム: "
        "雨のち晴れの一日だった。\n短くまとめました。</s>"
    )


def test_llama2_examples_carry_the_bos_their_template_writes_and_one_end_token(tokenizer):
    rendered = encode_example(tokenizer, preset("elyza_llama2"), EXAMPLES[0], max_length=1024)
    ids = rendered["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids).endswith("[/INST] 東京です。 </s>")


def test_a_template_that_does_not_end_with_eos_trains_no_end_token(tokenizer):
    template = render.template_from("no-eos", 1, {**PRESETS["calm2"], "end_with_eos": False})
    rendered = encode_example(tokenizer, template, EXAMPLES[0], max_length=1024)
    assert tokenizer.eos_token_id not in rendered["input_ids"]
    assert tokenizer.decode(rendered["input_ids"]).endswith("ASSISTANT: 東京です。")


@pytest.mark.parametrize("name", ["line_sft", "rinna", "chat_template"])
def test_every_fixture_example_masks_exactly_its_prompt(tokenizer, name):
    template = preset(name)
    for example in fixture_examples():
        rendered = encode_example(tokenizer, template, example, max_length=4096)
        prompt_ids = render.encode_prompt(template, prompt_of(example), tokenizer)
        masked = [i for i, label in enumerate(rendered["labels"]) if label == IGNORE_INDEX]
        assert masked == list(range(len(prompt_ids))), example.instruction
        assert rendered["input_ids"][: len(prompt_ids)] == prompt_ids


def test_a_sentencepiece_tokenizer_keeps_the_generation_prompt_and_learns_the_answer(tmp_path):
    # Sentencepiece may join the prompt's last space to the answer's first word when the two are
    # encoded together; the prompt must still be exactly the tokens generation sends.
    from generation.engine.tiny import build_tiny_sentencepiece_tokenizer

    tokenizer = load_tokenizer(build_tiny_sentencepiece_tokenizer(tmp_path / "sp"))
    for name in ("line_sft", "rinna"):
        template = preset(name)
        for example in EXAMPLES[:2]:
            rendered = encode_example(tokenizer, template, example, max_length=1024)
            ids, labels = rendered["input_ids"], rendered["labels"]
            prompt_ids = render.encode_prompt(template, prompt_of(example), tokenizer)
            n = len(prompt_ids)
            assert ids[:n] == prompt_ids
            assert labels[:n] == [IGNORE_INDEX] * n and labels[n:] == ids[n:]
            _, target = render.render_example(template, example_messages(example), tokenizer)
            assert tokenizer.decode(ids[n:]).strip() == target
            assert ids[-1] == tokenizer.eos_token_id


def test_truncation_keeps_the_prompt_masked_and_drops_examples_with_no_answer_left(tokenizer):
    template, example = preset("line_sft"), EXAMPLES[1]
    full = encode_example(tokenizer, template, example, max_length=1024)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = encode_example(tokenizer, template, example, max_length=n_prompt + 2)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 2]
    assert cut["labels"] == full["labels"][: n_prompt + 2]
    assert encode_example(tokenizer, template, example, max_length=n_prompt) is None


def test_the_collator_masks_padding_but_keeps_an_end_token_that_is_also_the_pad():
    eos = 2
    collate = AnswerOnlyCollator(pad_id=eos)
    batch = collate(
        [
            {"input_ids": [5, 6, 7, eos], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, eos]},
            {"input_ids": [5, eos], "labels": [IGNORE_INDEX, eos]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, eos], [5, eos, eos, eos]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, 7, eos],
        [IGNORE_INDEX, eos, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_the_held_out_split_is_seeded():
    items = list(range(100))
    train, held = split_examples(items, 0.05, seed=3)
    assert len(held) == 5 and sorted(train + held) == items
    assert split_examples(items, 0.05, seed=3) == (train, held)
    assert split_examples(items, 0.05, seed=4)[1] != held
    assert held_out_count(3, 0.05) == 1 and held_out_count(1, 0.5) == 0
    assert held_out_count(10, 0) == 0


def test_steps_count_like_the_trainer():
    config = TrainConfig(batch_size=4, gradient_accumulation=2, epochs=2)
    assert steps_for(33, config) == 10  # 9 batches -> 5 updates per epoch
    assert steps_for(33, TrainConfig(max_steps=7)) == 7


def test_lora_targets_are_chosen_per_architecture():
    assert lora_target_modules("gpt_neox") == ["query_key_value"]
    assert "q_proj" in lora_target_modules("llama")
    with pytest.raises(ValueError, match="no default LoRA target modules"):
        lora_target_modules("not-a-model")


def test_qlora_says_what_is_missing_here():
    import importlib.util

    import torch

    problem = qlora_unavailable()
    if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
        assert problem is None
    else:
        assert problem.startswith("QLoRA needs a CUDA GPU and the bitsandbytes package")
