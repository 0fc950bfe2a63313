"""Training examples: rendered in the generation prompt format, loss on the answer tokens only."""

from __future__ import annotations

import pytest

from generation import prompts
from generation.engine.examples import (
    IGNORE_INDEX,
    AnswerOnlyCollator,
    Example,
    held_out_count,
    render_example,
    split_examples,
)
from generation.engine.generate import encode_prompt
from generation.engine.loading import load_tokenizer
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


@pytest.mark.parametrize("fmt", [prompts.LINE_SFT, prompts.RINNA])
@pytest.mark.parametrize("example", EXAMPLES, ids=["no-input", "input-and-newlines", "spaces"])
def test_the_loss_mask_covers_exactly_the_answer_tokens(tokenizer, fmt, example):
    rendered = render_example(tokenizer, fmt, example, max_length=1024)
    ids, labels = rendered["input_ids"], rendered["labels"]
    question = prompts.join_instruction(example.instruction, example.input)
    prompt_text = prompts.format_prompt(fmt, question)
    # The prompt is tokenized exactly as generation tokenizes it...
    prompt_ids = encode_prompt(tokenizer, prompt_text, fmt)
    n = len(prompt_ids)
    assert ids[:n] == prompt_ids
    # ...every one of its tokens is masked, and nothing after it is.
    assert labels[:n] == [IGNORE_INDEX] * n
    assert labels[n:] == ids[n:]
    # What is left to learn is the answer as the format writes it, then the end token.
    answer_text = prompts.format_answer(fmt, example.output.strip())
    assert tokenizer.decode(ids[n:]) == answer_text + tokenizer.eos_token
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids) == prompt_text + answer_text + tokenizer.eos_token


def test_rinna_examples_write_every_newline_as_nl(tokenizer):
    rendered = render_example(tokenizer, prompts.RINNA, EXAMPLES[1], max_length=1024)
    text = tokenizer.decode(rendered["input_ids"])
    assert "\n" not in text
    assert text == (
        "ユーザー: 次の文を要約してください。<NL><NL>"
        "今日は朝から雨が降っていた。<NL>午後には晴れた。<NL>"
        "システム: 雨のち晴れの一日だった。<NL>短くまとめました。</s>"
    )


def test_line_sft_examples_join_instruction_and_input_with_a_blank_line(tokenizer):
    rendered = render_example(tokenizer, prompts.LINE_SFT, EXAMPLES[1], max_length=1024)
    assert tokenizer.decode(rendered["input_ids"]).startswith(
        "ユーザー: 次の文を要約してください。\n\n"
        "今日は朝から雨が降っていた。\n午後には晴れた。\nシステム: "
    )


@pytest.mark.parametrize("fmt", [prompts.LINE_SFT, prompts.RINNA, prompts.CHAT_TEMPLATE])
def test_every_fixture_example_masks_exactly_its_prompt(tokenizer, fmt):
    for example in fixture_examples():
        rendered = render_example(tokenizer, fmt, example, max_length=4096)
        question = prompts.join_instruction(example.instruction, example.input)
        prompt_ids = encode_prompt(tokenizer, prompts.format_prompt(fmt, question, tokenizer), fmt)
        masked = [i for i, label in enumerate(rendered["labels"]) if label == IGNORE_INDEX]
        assert masked == list(range(len(prompt_ids))), example.instruction
        assert rendered["input_ids"][: len(prompt_ids)] == prompt_ids


def test_a_sentencepiece_tokenizer_still_learns_exactly_the_answer(tmp_path):
    # Sentencepiece marks a word start ("▁") on a piece encoded alone, so prompt and answer
    # cannot be encoded apart; the whole text is encoded and the mask ends where it leaves the
    # prompt's encoding.
    from generation.engine.tiny import build_tiny_sentencepiece_tokenizer

    tokenizer = load_tokenizer(build_tiny_sentencepiece_tokenizer(tmp_path / "sp"))
    for fmt in (prompts.LINE_SFT, prompts.RINNA):
        for example in EXAMPLES[:2]:
            rendered = render_example(tokenizer, fmt, example, max_length=1024)
            ids, labels = rendered["input_ids"], rendered["labels"]
            start = labels.index(next(label for label in labels if label != IGNORE_INDEX))
            question = prompts.join_instruction(example.instruction, example.input)
            prompt_ids = encode_prompt(tokenizer, prompts.format_prompt(fmt, question), fmt)
            assert ids[:start] == prompt_ids[:start]
            assert all(label == IGNORE_INDEX for label in labels[:start])
            assert labels[start:] == ids[start:]
            answer = prompts.format_answer(fmt, example.output)
            assert tokenizer.decode(ids[start:]).strip() == answer + tokenizer.eos_token


def test_truncation_keeps_the_prompt_masked_and_drops_examples_with_no_answer_left(tokenizer):
    example = EXAMPLES[1]
    full = render_example(tokenizer, prompts.LINE_SFT, example, max_length=1024)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = render_example(tokenizer, prompts.LINE_SFT, example, max_length=n_prompt + 2)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 2]
    assert cut["labels"] == full["labels"][: n_prompt + 2]
    assert render_example(tokenizer, prompts.LINE_SFT, example, max_length=n_prompt) is None


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
