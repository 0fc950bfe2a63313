"""The training engine on the tiny model, without Django: resume, full fine-tuning, merging."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from generation.engine import render
from generation.engine.examples import Example
from generation.engine.generate import Prompt, generate_answers
from generation.engine.loading import load_model, load_tokenizer
from generation.engine.presets import PRESETS
from generation.engine.train import (
    TrainConfig,
    merge_adapter,
    steps_for,
    train,
)
from generation.engine.trainer import last_checkpoint
from tests.generation.conftest import fixture_examples

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

LINE_SFT = render.template_from("line_sft", 1, PRESETS["line_sft"])


class Interrupted(RuntimeError):
    pass


class FailAtStep(TrainerCallback):
    """Stands in for a crash (OOM, a lost node) in the middle of a run."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"failed at step {self.step}")


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return fixture_examples()[:48]


def _config(**overrides) -> TrainConfig:
    values = {
        "method": "lora",
        "learning_rate": 1e-2,
        "epochs": 2,
        "batch_size": 4,
        "gradient_accumulation": 1,
        "max_length": 96,
        "eval_fraction": 0.0,
        "save_steps": 5,
        "seed": 0,
    }
    return TrainConfig(**{**values, **overrides})


def _run(tiny_model_dir, tokenizer, examples, root, config, log=None, output="adapter", **kwargs):
    """Train into ``root``: the result and the training loss by step (``log`` gets every entry)."""
    log = [] if log is None else log
    result = train(
        model_path=str(tiny_model_dir),
        tokenizer=tokenizer,
        examples=examples,
        template=LINE_SFT,
        config=config,
        checkpoint_dir=root / "checkpoints",
        output_dir=root / output,
        on_log=log.extend,
        **kwargs,
    )
    return result, {e.step: e.loss for e in log if e.kind == "train"}


def test_a_run_that_fails_mid_way_resumes_from_its_checkpoint_to_the_same_end(
    tiny_model_dir, tokenizer, examples, tmp_path
):
    config = _config()
    straight, straight_losses = _run(
        tiny_model_dir, tokenizer, examples, tmp_path / "straight", config
    )
    assert straight.train_examples + straight.skipped_examples == len(examples)
    expected_steps = steps_for(straight.train_examples, config)
    assert expected_steps > 15
    assert straight.global_step == expected_steps and straight.resumed_from_step == 0

    root = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        _run(tiny_model_dir, tokenizer, examples, root, config, callbacks=[FailAtStep(13)])
    assert last_checkpoint(root / "checkpoints")[1] == 10
    assert not (root / "adapter").exists()

    starts = []
    resumed, resumed_losses = _run(
        tiny_model_dir, tokenizer, examples, root, config, on_begin=starts.append
    )
    assert resumed.resumed_from_step == 10
    assert starts[0].start_step == 10 and starts[0].max_steps == expected_steps
    assert resumed.global_step == expected_steps and not resumed.stopped
    assert sorted(resumed_losses) == list(range(11, expected_steps + 1))
    assert (root / "adapter" / "adapter_config.json").is_file()
    # Same data order, optimizer and random state: the resumed steps train as the uninterrupted
    # run's did.
    for step, loss in resumed_losses.items():
        assert loss == pytest.approx(straight_losses[step], rel=1e-3, abs=1e-3), step


@pytest.mark.quick  # `make test-quick` runs this one of its family
def test_should_stop_ends_the_run_after_the_step_with_a_checkpoint(
    tiny_model_dir, tokenizer, examples, tmp_path
):
    steps = []
    result, losses = _run(
        tiny_model_dir,
        tokenizer,
        examples,
        tmp_path,
        _config(save_steps=100),
        should_stop=lambda: len(steps) >= 7,
        callbacks=[_StepCounter(steps)],
    )
    assert result.stopped and result.global_step == 7 and result.output_dir is None
    assert sorted(losses) == list(range(1, 8))
    assert last_checkpoint(tmp_path / "checkpoints")[1] == 7


class _StepCounter(TrainerCallback):
    def __init__(self, steps: list):
        self.steps = steps

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_full_fine_tuning_saves_a_standalone_model_that_generates(
    tiny_model_dir, tokenizer, examples, tmp_path
):
    config = _config(method="full", learning_rate=1e-3, max_steps=6, eval_fraction=0.1)
    log = []
    result, _ = _run(tiny_model_dir, tokenizer, examples, tmp_path, config, log=log, output="model")
    assert result.global_step == 6 and result.target_modules == []
    assert result.train_tokens > 0 and result.eval_examples >= 1
    assert [e.kind for e in log].count("eval") >= 1
    model = load_model(tmp_path / "model")
    saved_tokenizer = load_tokenizer(tmp_path / "model")
    [answer] = generate_answers(
        model,
        saved_tokenizer,
        [Prompt.single(1, "日本の首都はどこですか？")],
        template=LINE_SFT,
        params={"max_new_tokens": 16},
    )
    assert answer.new_tokens > 0


def test_a_merged_adapter_computes_what_base_plus_adapter_computes(
    tiny_model_dir, tokenizer, tuned_adapter_dir, tmp_path
):
    adapted = load_model(tiny_model_dir, adapter_path=tuned_adapter_dir)
    merged_dir = merge_adapter(
        str(tiny_model_dir), tuned_adapter_dir, tmp_path / "merged", tokenizer=tokenizer
    )
    merged = load_model(merged_dir)
    assert not hasattr(merged, "peft_config")
    ids = tokenizer("ユーザー: こんにちは\nシステム: ", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    base = load_model(tiny_model_dir)
    with torch.inference_mode():
        assert not torch.allclose(base(input_ids=ids).logits, got, atol=1e-3)
