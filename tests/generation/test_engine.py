"""The generation engine on the real tiny model: build, load, batch, sample, stop, LoRA."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generation.engine import generate as engine
from generation.engine import paths, render
from generation.engine.generate import (
    BAD_BATCH_SIZE,
    UNKNOWN_PARAMS,
    Generated,
    Prompt,
    generate_answers,
    generation_config_for,
    pad_left,
)
from generation.engine.loading import (
    SentencePieceTokenizer,
    load_model,
    load_tokenizer,
    resolve_path,
)
from generation.engine.presets import PRESETS
from generation.engine.tiny import (
    MARKER_FILE,
    MAX_NEW_TOKENS,
    build_tiny_model,
    build_tiny_sentencepiece_tokenizer,
)

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef、。「」]")
SPECIAL_TEXT = ("<s>", "</s>", "<pad>", "<unk>", "<0x")


def preset(name: str) -> render.Template:
    """A shipped preset as the renderer's template (version 1, as migration 0006 makes it)."""
    fields = {k: v for k, v in PRESETS[name].items() if k != "description"}
    fields["stop_strings"] = tuple(fields.get("stop_strings", ()))
    return render.Template(name=name, version=1, **fields)


LINE_SFT = preset("line_sft")
# The same layout with no stop strings: for answers forced to a length.
LINE_NO_STOP = dataclasses.replace(LINE_SFT, stop_strings=())
CHAT_TEMPLATE = preset("chat_template")
RINNA = preset("rinna")


def _questions(count: int) -> list[Prompt]:
    with (FIXTURES / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [Prompt.single(row["question_id"], row["text"]) for row in rows[:count]]


def _text(prompt: Prompt) -> str:
    return prompt.messages[-1]["content"]


def encode_prompt(tokenizer, prompt: Prompt | str, template: render.Template = LINE_SFT):
    if isinstance(prompt, str):
        prompt = Prompt.single(0, prompt)
    return render.encode_prompt(template, prompt.messages, tokenizer)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_seed1(tiny_model_dir_seed1):
    return load_model(tiny_model_dir_seed1), load_tokenizer(tiny_model_dir_seed1)


@pytest.fixture(scope="module")
def greedy_answers(tiny) -> list[Generated]:
    model, tokenizer = tiny
    return generate_answers(model, tokenizer, _questions(24), template=LINE_SFT, batch_size=8)


# The tiny model itself


def test_a_finished_build_is_not_built_again(tiny_model_dir):
    weights = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tiny_model_dir, seed=0) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((tiny_model_dir / MARKER_FILE).read_text())["seed"] == 0


def test_the_same_seed_gives_byte_identical_weights(tmp_path):
    # A few steps are enough to show the whole build is deterministic (the session fixtures
    # hold the full builds).
    first = build_tiny_model(tmp_path / "a", seed=7, steps=3)
    second = build_tiny_model(tmp_path / "b", seed=7, steps=3)
    other = build_tiny_model(tmp_path / "c", seed=8, steps=3)
    weights = (first / "model.safetensors").read_bytes()
    assert weights == (second / "model.safetensors").read_bytes()
    assert weights != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


def test_a_build_with_other_settings_in_the_same_directory_is_redone(tmp_path):
    build_tiny_model(tmp_path, seed=7, steps=2)
    before = (tmp_path / "model.safetensors").read_bytes()
    build_tiny_model(tmp_path, seed=7, steps=3)
    assert (tmp_path / "model.safetensors").read_bytes() != before
    assert json.loads((tmp_path / MARKER_FILE).read_text())["steps"] == 3


def test_the_build_leaves_the_callers_random_state_and_threads_alone(tmp_path):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path, seed=7, steps=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_different_seeds_give_different_answers(tiny, tiny_seed1, greedy_answers):
    model, tokenizer = tiny_seed1
    other = generate_answers(model, tokenizer, _questions(24), template=LINE_SFT, batch_size=8)
    differing = sum(a.text != b.text for a, b in zip(greedy_answers, other, strict=True))
    assert differing >= 20


@pytest.mark.quick  # `make test-quick` runs this one of its family
def test_the_same_seed_gives_the_same_answers(tiny, greedy_answers):
    model, tokenizer = tiny
    again = generate_answers(model, tokenizer, _questions(24), template=LINE_SFT, batch_size=8)
    assert again == greedy_answers


def test_the_tiny_model_has_distinct_special_tokens_and_generation_defaults(tiny):
    model, tokenizer = tiny
    ids = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id]
    assert len(set(ids)) == 3 and tokenizer.unk_token_id is not None
    config = model.generation_config
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.max_new_tokens == MAX_NEW_TOKENS
    assert not config.do_sample


def test_answers_look_japanese(greedy_answers):
    # A tiny model trained on short questions now and then ends at once after a long prompt.
    assert sum(bool(g.text) for g in greedy_answers) >= 0.9 * len(greedy_answers)
    text = "".join(g.text for g in greedy_answers)
    assert len(JAPANESE.findall(text)) >= 0.8 * len(text)


def test_most_answers_end_with_the_end_token_before_the_limit(greedy_answers):
    ended = [g for g in greedy_answers if g.new_tokens < MAX_NEW_TOKENS]
    assert len(ended) >= 0.8 * len(greedy_answers)


def test_answers_hold_no_prompt_echo_and_no_special_tokens(greedy_answers):
    for question, generated in zip(_questions(24), greedy_answers, strict=True):
        assert generated.key == question.key
        assert _text(question) not in generated.text
        assert "ユーザー:" not in generated.text
        assert not generated.text.startswith("システム:")
        assert generated.text == generated.text.strip()
        for special in SPECIAL_TEXT:
            assert special not in generated.text


def test_new_tokens_count_up_to_and_including_the_end_token(tiny):
    model, tokenizer = tiny
    (question,) = _questions(1)
    (generated,) = generate_answers(model, tokenizer, [question], template=LINE_SFT)
    ids = encode_prompt(tokenizer, question)
    output = model.generate(
        input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
    )
    new = output[0, len(ids) :].tolist()
    assert new[generated.new_tokens - 1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in new[: generated.new_tokens - 1]
    assert generated.token_ids == tuple(new[: generated.new_tokens])


# Stop strings, stop reasons and what each answer records


def test_a_stop_string_ends_generation_in_the_engine(tiny):
    # "。" ends most of the tiny model's sentences: with it as a stop string, generation stops
    # right after the token that completes it (not only cut afterwards), and the stored answer
    # is the reply before it.
    model, tokenizer = tiny
    questions = _questions(12)
    params = {"max_new_tokens": 48}
    free = generate_answers(model, tokenizer, questions, template=LINE_NO_STOP, params=params)
    period = dataclasses.replace(LINE_NO_STOP, stop_strings=("。",))
    stopped = generate_answers(model, tokenizer, questions, template=period, params=params)
    cut = [(f, s) for f, s in zip(free, stopped, strict=True) if "。" in f.text]
    assert len(cut) >= 6
    for f, s in cut:
        assert s.stop_reason == engine.STOP_STRING and not s.truncated
        assert s.new_tokens < f.new_tokens
        assert f.token_ids[: s.new_tokens] == s.token_ids  # the same greedy path, ended early
        assert tokenizer.decode(s.token_ids, skip_special_tokens=True).endswith("。")
        assert s.text == f.text.split("。")[0].strip()


def test_each_answer_records_its_prompt_and_why_it_stopped(tiny, greedy_answers):
    model, tokenizer = tiny
    for question, g in zip(_questions(24), greedy_answers, strict=True):
        assert g.prompt_text == render.render_prompt(LINE_SFT, question.messages, tokenizer)
        assert g.prompt_tokens == len(encode_prompt(tokenizer, question))
        ended = g.token_ids[-1] == tokenizer.eos_token_id
        assert (g.stop_reason == engine.EOS) == ended
        assert g.stop_reason in (engine.EOS, engine.STOP_STRING, engine.LENGTH)
        assert g.truncated == (g.stop_reason == engine.LENGTH)
    short = generate_answers(
        model, tokenizer, _questions(6), template=LINE_NO_STOP, params={"max_new_tokens": 3}
    )
    for g in short:
        assert (g.stop_reason, g.truncated) == (
            (engine.LENGTH, True) if g.new_tokens == 3 else (engine.EOS, False)
        )
    assert any(g.truncated for g in short)


def test_a_later_turn_is_generated_from_the_whole_conversation(tiny, greedy_answers):
    model, tokenizer = tiny
    first = _questions(1)[0]
    reply = greedy_answers[0].text
    follow_up = "もっと詳しく教えてください。"
    messages = render.conversation([_text(first), follow_up], [reply])
    (second,) = generate_answers(
        model, tokenizer, [Prompt(("q", 2), tuple(messages))], template=LINE_SFT
    )
    assert second.prompt_text == (
        f"ユーザー: {_text(first)}\nシステム: {reply}\nユーザー: {follow_up}\nシステム: "
    )
    assert second.prompt_tokens == len(render.encode_prompt(LINE_SFT, messages, tokenizer))


def test_decoding_records_the_parameters_in_force_and_the_seed(tiny):
    model, tokenizer = tiny
    config = engine.prepared_config(model, tokenizer, {"max_new_tokens": 9})
    assert engine.decoding_of(config, {"max_new_tokens": 9}, 4) == {
        "max_new_tokens": 9,
        "do_sample": False,
        "seed": 4,
    }
    sampled = {"do_sample": True, "temperature": 0.7}
    recorded = engine.decoding_of(engine.prepared_config(model, tokenizer, sampled), sampled, 1)
    assert recorded["temperature"] == 0.7 and recorded["do_sample"] and recorded["seed"] == 1


def test_a_local_model_is_named_by_its_files_and_a_hub_model_by_its_commit(tiny, tiny_model_dir):
    from generation.engine.revision import local_revision, model_revision

    model, _ = tiny
    revision = model_revision(model, tiny_model_dir, None)
    assert revision == local_revision(tiny_model_dir) and revision.startswith("sha256:")
    snapshot = tiny_model_dir.parent / "hub" / "snapshots" / ("a1" * 20)
    snapshot.mkdir(parents=True, exist_ok=True)
    assert local_revision(snapshot) == "a1" * 20
    model.config._commit_hash = "b2" * 20
    try:
        assert model_revision(model, tiny_model_dir, None) == "b2" * 20
    finally:
        model.config._commit_hash = None


# Batching


def test_batched_greedy_answers_equal_one_at_a_time_answers(tiny, greedy_answers):
    model, tokenizer = tiny
    one_by_one = generate_answers(model, tokenizer, _questions(24), template=LINE_SFT, batch_size=1)
    assert one_by_one == greedy_answers


def test_batched_greedy_equals_one_at_a_time_when_every_answer_runs_to_the_limit(tiny):
    # Forced length: every position of every row is compared, none cut short by an end token.
    model, tokenizer = tiny
    params = {"min_new_tokens": 24, "max_new_tokens": 24}
    questions = _questions(12)
    batched = generate_answers(model, tokenizer, questions, template=LINE_NO_STOP, params=params)
    single = generate_answers(
        model, tokenizer, questions, template=LINE_NO_STOP, params=params, batch_size=1
    )
    assert batched == single
    assert {g.new_tokens for g in batched} == {24}


def test_prompts_are_padded_on_the_left():
    input_ids, attention_mask = pad_left([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_generation_sets_the_tokenizer_to_pad_on_the_left(tiny, tiny_model_dir):
    model, _ = tiny
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.padding_side = "right"
    generate_answers(
        model, tokenizer, _questions(2), template=LINE_SFT, params={"max_new_tokens": 2}
    )
    assert tokenizer.padding_side == "left"


def test_a_tokenizer_without_a_pad_token_pads_with_the_end_token(tiny, tiny_model_dir):
    model, reference = tiny
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.pad_token = None
    questions = _questions(6)
    params = {"max_new_tokens": 16}
    answers = generate_answers(model, tokenizer, questions, template=LINE_SFT, params=params)
    assert answers == generate_answers(
        model, reference, questions, template=LINE_SFT, params=params
    )


def _batched(tiny, questions, *, max_new_tokens: int, batch_size: int, stop_after=None):
    """Generate ``questions`` in batches (asking to stop once ``stop_after`` batches are done);
    returns the answers and the batches on_batch saw."""
    model, tokenizer = tiny
    batches: list[list[Generated]] = []
    answers = generate_answers(
        model,
        tokenizer,
        questions,
        template=LINE_SFT,
        params={"max_new_tokens": max_new_tokens},
        batch_size=batch_size,
        on_batch=batches.append,
        should_stop=None if stop_after is None else lambda: len(batches) >= stop_after,
    )
    return answers, batches


def test_on_batch_is_called_once_per_batch_with_that_batchs_answers(tiny):
    answers, batches = _batched(tiny, _questions(10), max_new_tokens=8, batch_size=4)
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(g.key for batch in batches for g in batch) == sorted(g.key for g in answers)


def test_longest_prompts_are_generated_first(tiny):
    _, tokenizer = tiny
    questions = _questions(12)
    _, batches = _batched(tiny, questions, max_new_tokens=2, batch_size=3)
    length = {q.key: len(encode_prompt(tokenizer, q)) for q in questions}
    order = [length[g.key] for batch in batches for g in batch]
    assert order == sorted(order, reverse=True)


def test_answers_come_back_in_the_order_of_the_prompts(tiny):
    model, tokenizer = tiny
    questions = _questions(9)
    answers = generate_answers(
        model, tokenizer, questions, template=LINE_SFT, params={"max_new_tokens": 2}, batch_size=4
    )
    assert [g.key for g in answers] == [q.key for q in questions]


def test_should_stop_ends_generation_before_the_next_batch(tiny):
    answers, batches = _batched(tiny, _questions(10), max_new_tokens=4, batch_size=4, stop_after=1)
    assert len(batches) == 1
    assert answers == sorted(batches[0], key=lambda g: g.key)


def test_should_stop_before_anything_generates_nothing(tiny):
    model, tokenizer = tiny
    calls = []
    answers = generate_answers(
        model,
        tokenizer,
        _questions(4),
        template=LINE_SFT,
        on_batch=calls.append,
        should_stop=lambda: True,
    )
    assert answers == [] and calls == []


def test_a_batch_size_below_one_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError) as error:
        generate_answers(model, tokenizer, _questions(2), template=LINE_SFT, batch_size=0)
    assert str(error.value) == BAD_BATCH_SIZE


def test_empty_prompt_list_gives_no_answers(tiny):
    model, tokenizer = tiny
    assert generate_answers(model, tokenizer, [], template=LINE_SFT) == []


# Parameters


def test_params_override_the_models_defaults_without_changing_them(tiny):
    model, _ = tiny
    config = generation_config_for(
        model, {"max_new_tokens": 7, "do_sample": True, "temperature": 0.5, "top_p": 0.9}
    )
    assert (config.max_new_tokens, config.do_sample, config.temperature, config.top_p) == (
        7,
        True,
        0.5,
        0.9,
    )
    assert config.eos_token_id == model.generation_config.eos_token_id
    assert model.generation_config.max_new_tokens == MAX_NEW_TOKENS
    assert not model.generation_config.do_sample


def test_no_params_keep_the_models_defaults(tiny):
    model, _ = tiny
    config = generation_config_for(model, None)
    assert config.max_new_tokens == MAX_NEW_TOKENS and not config.do_sample


def test_unknown_params_are_refused_by_name(tiny):
    model, _ = tiny
    with pytest.raises(ValueError) as error:
        generation_config_for(model, {"num_beams": 4, "max_new_tokens": 8, "tempreature": 0.7})
    assert str(error.value) == UNKNOWN_PARAMS.format(names="num_beams, tempreature")


def test_unknown_params_are_refused_before_anything_generates(tiny):
    model, tokenizer = tiny
    calls = []
    with pytest.raises(ValueError, match="tempreature"):
        generate_answers(
            model,
            tokenizer,
            _questions(2),
            template=LINE_SFT,
            params={"tempreature": 0.7},
            on_batch=calls.append,
        )
    assert calls == []


def test_impossible_param_values_are_refused(tiny):
    model, _ = tiny
    with pytest.raises(ValueError):
        generation_config_for(model, {"max_new_tokens": 0})


def test_max_new_tokens_limits_the_answer(tiny):
    model, tokenizer = tiny
    answers = generate_answers(
        model, tokenizer, _questions(6), template=LINE_SFT, params={"max_new_tokens": 3}
    )
    assert all(1 <= g.new_tokens <= 3 for g in answers)


def test_min_new_tokens_holds_the_end_token_back(tiny, greedy_answers):
    model, tokenizer = tiny
    params = {"min_new_tokens": 40, "max_new_tokens": 40}
    answers = generate_answers(
        model, tokenizer, _questions(6), template=LINE_NO_STOP, params=params
    )
    assert [g.new_tokens for g in answers] == [40] * 6
    assert any(short.new_tokens < 40 for short in greedy_answers[:6])


def test_a_model_without_max_new_tokens_gets_the_engines_default(tiny):
    model, _ = tiny
    original = model.generation_config
    try:
        model.generation_config = type(original)(eos_token_id=original.eos_token_id)
        assert generation_config_for(model, {}).max_new_tokens == engine.DEFAULT_MAX_NEW_TOKENS
    finally:
        model.generation_config = original


# Sampling


SAMPLING = {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 32}


def test_sampled_answers_repeat_for_the_same_seed_whatever_the_batch(tiny):
    model, tokenizer = tiny
    questions = _questions(10)
    first = generate_answers(
        model, tokenizer, questions, template=LINE_SFT, params=SAMPLING, seed=5, batch_size=4
    )
    regrouped = generate_answers(
        model,
        tokenizer,
        questions[::-1][:7],
        template=LINE_SFT,
        params=SAMPLING,
        seed=5,
        batch_size=3,
    )
    by_key = {g.key: g for g in first}
    assert all(by_key[g.key] == g for g in regrouped)


def test_sampled_answers_change_with_the_seed(tiny):
    model, tokenizer = tiny
    questions = _questions(10)
    a = generate_answers(model, tokenizer, questions, template=LINE_SFT, params=SAMPLING, seed=5)
    b = generate_answers(model, tokenizer, questions, template=LINE_SFT, params=SAMPLING, seed=6)
    assert sum(x.text != y.text for x, y in zip(a, b, strict=True)) >= 5


def test_sampling_differs_from_greedy_and_leaves_the_global_random_state_alone(tiny):
    model, tokenizer = tiny
    questions = _questions(10)
    greedy = generate_answers(
        model, tokenizer, questions, template=LINE_SFT, params={"max_new_tokens": 32}
    )
    torch.manual_seed(99)
    expected = torch.rand(2)
    torch.manual_seed(99)
    sampled = generate_answers(
        model, tokenizer, questions, template=LINE_SFT, params={**SAMPLING, "temperature": 1.5}
    )
    assert torch.equal(torch.rand(2), expected)
    assert sum(s.text != g.text for s, g in zip(sampled, greedy, strict=True)) >= 5


def test_top_k_of_one_samples_the_greedy_answer(tiny):
    model, tokenizer = tiny
    questions = _questions(6)
    params = {"max_new_tokens": 24}
    greedy = generate_answers(model, tokenizer, questions, template=LINE_SFT, params=params)
    sampled = generate_answers(
        model,
        tokenizer,
        questions,
        template=LINE_SFT,
        params={**params, "do_sample": True, "top_k": 1},
    )
    assert sampled == greedy


# Prompt formats


def test_chat_template_format_generates_what_the_line_format_does(tiny, greedy_answers):
    model, tokenizer = tiny
    answers = generate_answers(model, tokenizer, _questions(8), template=CHAT_TEMPLATE)
    assert answers == greedy_answers[:8]


def test_rinna_format_generates_answers_too(tiny):
    model, tokenizer = tiny
    answers = generate_answers(
        model, tokenizer, _questions(4), template=RINNA, params={"max_new_tokens": 16}
    )
    assert len(answers) == 4 and all("<NL>" not in g.text for g in answers)


def test_a_prompt_never_ends_with_the_end_token(tiny):
    _, tokenizer = tiny
    ids = encode_prompt(tokenizer, "質問")
    assert ids[-1] != tokenizer.eos_token_id
    assert tokenizer.decode(ids) == "ユーザー: 質問\nシステム: "


# Loading


def test_relative_paths_resolve_under_the_storage_root(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    assert resolve_path("models/tiny", tmp_path) == str(tmp_path / "models" / "tiny")


def test_names_not_under_the_storage_root_are_hub_ids(tmp_path):
    assert resolve_path("rinna/japanese-gpt-neox-3.6b", tmp_path) == "rinna/japanese-gpt-neox-3.6b"
    assert resolve_path("rinna/japanese-gpt-neox-3.6b", None) == "rinna/japanese-gpt-neox-3.6b"


def test_absolute_paths_inside_the_storage_root_are_kept_and_others_refused(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    inside = str(tmp_path / "models" / "tiny")
    assert resolve_path(inside, tmp_path) == inside
    assert paths.confine(inside, tmp_path) == "models/tiny"
    for outside in ["/etc", str(tmp_path.parent), "../x", "models/../../x", "~/m", "a\\b"]:
        with pytest.raises(ValueError, match="outside MODEL_STORAGE"):
            resolve_path(outside, tmp_path)
    # Without a storage root (the engine on its own) a path is used as given.
    assert resolve_path("/elsewhere/model", None) == "/elsewhere/model"


def test_a_symlink_out_of_the_storage_root_is_refused_at_load_time(tmp_path):
    root, elsewhere = tmp_path / "storage", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "linked").symlink_to(elsewhere)
    assert paths.confine("linked", root) == "linked"  # the row may say it...
    with pytest.raises(ValueError, match="outside MODEL_STORAGE"):
        resolve_path("linked", root)  # ...the loader will not follow it


def test_a_name_that_is_a_folder_beside_the_worker_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    root = tmp_path / "storage"
    root.mkdir()
    (tmp_path / "planted").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="outside MODEL_STORAGE"):
        resolve_path("planted", root)
    with pytest.raises(ValueError, match="neither a folder"):
        resolve_path("a/b/c", root)


def test_the_model_loads_for_inference_on_the_cpu(tiny):
    model, _ = tiny
    assert not model.training
    assert model.device.type == "cpu"
    assert model.dtype == torch.float32


def test_a_dtype_can_be_named(tiny_model_dir):
    assert load_model(tiny_model_dir, dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tiny_model_dir, dtype="float13")


@pytest.fixture(scope="module")
def sentencepiece_dir(tmp_path_factory):
    return build_tiny_sentencepiece_tokenizer(tmp_path_factory.mktemp("spiece"), seed=0)


SENTENCEPIECE_TEXT = (
    "ユーザー: 味噌汁の味噌はいつ入れますか？\nシステム: 火を止めて  溶き入れます。😀"
)


def test_a_sentencepiece_only_tokenizer_loads_through_sentencepiece(sentencepiece_dir):
    import sentencepiece

    assert not (sentencepiece_dir / "tokenizer.json").exists()
    tokenizer = load_tokenizer(sentencepiece_dir)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    processor = sentencepiece.SentencePieceProcessor(
        model_file=str(sentencepiece_dir / "spiece.model")
    )
    # Exactly the ids the sentencepiece model gives: no whitespace splitting, no appended </s>.
    assert tokenizer(SENTENCEPIECE_TEXT)["input_ids"] == processor.encode(SENTENCEPIECE_TEXT)


def test_transformers_alone_does_not_reproduce_the_sentencepiece_ids(sentencepiece_dir):
    # Why load_tokenizer takes over: transformers 5 ignores use_fast=False and converts the
    # model to a fast T5 tokenizer (whitespace split, no byte fallback, </s> appended), or fails
    # outright when the protobuf package is missing.
    import sentencepiece
    from transformers import AutoTokenizer

    processor = sentencepiece.SentencePieceProcessor(
        model_file=str(sentencepiece_dir / "spiece.model")
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(sentencepiece_dir, use_fast=False)
    except (ValueError, ImportError, OSError):
        return
    assert tokenizer(SENTENCEPIECE_TEXT)["input_ids"] != processor.encode(SENTENCEPIECE_TEXT)


def test_a_sentencepiece_tokenizer_round_trips_japanese_with_newlines(sentencepiece_dir):
    tokenizer = load_tokenizer(sentencepiece_dir)
    ids = tokenizer(SENTENCEPIECE_TEXT)["input_ids"]
    assert tokenizer.decode(ids) == SENTENCEPIECE_TEXT
    with_end = tokenizer.decode([*ids, tokenizer.eos_token_id], skip_special_tokens=True)
    assert with_end == SENTENCEPIECE_TEXT
    assert tokenizer.decode([*ids, tokenizer.eos_token_id]) == SENTENCEPIECE_TEXT + "</s>"


def test_a_sentencepiece_tokenizer_has_its_special_tokens(sentencepiece_dir):
    tokenizer = load_tokenizer(sentencepiece_dir)
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (
        "<pad>",
        "<s>",
        "</s>",
    )
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id == 3


def test_a_sentencepiece_tokenizer_pads_on_the_left_for_batches(sentencepiece_dir):
    tokenizer = load_tokenizer(sentencepiece_dir)
    tokenizer.padding_side = "left"
    batch = tokenizer(["あ", SENTENCEPIECE_TEXT], padding=True)
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1


def test_a_sentencepiece_tokenizer_without_special_tokens_in_its_config_takes_the_models(
    sentencepiece_dir, tmp_path
):
    (tmp_path / "spiece.model").write_bytes((sentencepiece_dir / "spiece.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    tokenizer = load_tokenizer(tmp_path)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("</s>", 2)
    assert (tokenizer.pad_token, tokenizer.unk_token) == ("<pad>", "<unk>")


def test_a_saved_tiny_tokenizer_loads_as_a_fast_tokenizer_with_its_template(tiny):
    _, tokenizer = tiny
    assert tokenizer.is_fast
    assert tokenizer.chat_template


# LoRA adapters


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    base = load_model(tiny_model_dir)
    adapted = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value"], task_type="CAUSAL_LM"),
    )
    # A fresh adapter is a no-op (B starts at zero); give it weights so loading is observable.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    out = tmp_path_factory.mktemp("adapter")
    adapted.save_pretrained(out)
    return out


def _logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([encode_prompt(tokenizer, "質問")])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_lora_adapter_is_loaded_on_top_of_its_base(tiny, tiny_model_dir, adapter_dir):
    from peft import PeftModel

    base, tokenizer = tiny
    adapted = load_model(tiny_model_dir, adapter_path=adapter_dir)
    assert isinstance(adapted, PeftModel)
    assert not adapted.training
    assert not torch.allclose(_logits(adapted, tokenizer), _logits(base, tokenizer))


def test_a_loaded_adapter_gives_the_same_outputs_each_time(tiny, tiny_model_dir, adapter_dir):
    _, tokenizer = tiny
    first = load_model(tiny_model_dir, adapter_path=adapter_dir)
    second = load_model(tiny_model_dir, adapter_path=adapter_dir)
    assert torch.equal(_logits(first, tokenizer), _logits(second, tokenizer))


def test_answers_generate_through_a_lora_adapter(tiny, tiny_model_dir, adapter_dir):
    _, tokenizer = tiny
    adapted = load_model(tiny_model_dir, adapter_path=adapter_dir)
    answers = generate_answers(
        adapted, tokenizer, _questions(4), template=LINE_SFT, params={"max_new_tokens": 8}
    )
    assert [g.key for g in answers] == [q.key for q in _questions(4)]
    assert all(1 <= g.new_tokens <= 8 for g in answers)


def test_the_engines_and_the_parameter_declaration_load_without_django():
    code = (
        "import sys, generation.engine.params, generation.engine.generate, generation.engine.train,"
        " generation.engine.endpoint, generation.engine.revision;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    repo = FIXTURES.parent
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert result.stdout.strip() == "[]"


def test_the_engine_config_defaults_are_the_declared_ones():
    from generation.engine.params import FINETUNE
    from generation.engine.train import TrainConfig

    config = TrainConfig()
    assert config.target_modules is None  # chosen per architecture
    assert {p.name: getattr(config, p.name) for p in FINETUNE if p.kind is not list} == {
        p.name: p.default for p in FINETUNE if p.kind is not list
    }
