"""Fixtures shared by the generation tests: instruction data sets, registered models, the
fixture's training examples and a quiet machine for the tiny model's training runs."""

from __future__ import annotations

import json

import pytest

from generation.engine.examples import Example
from generation.engine.loading import load_tokenizer
from generation.models import InstructionDataset, LanguageModel
from generation.registry import language_model_register, storage_relative
from generation.training.data import instruction_dataset_import
from tests.conftest import FIXTURES, wait_for


def instruction_dataset(name: str, rows: list[tuple[str, str]]) -> InstructionDataset:
    """An instruction data set of (instruction, output) rows, imported as a JSONL upload."""
    data = "".join(
        json.dumps({"instruction": q, "output": a}, ensure_ascii=False) + "\n" for q, a in rows
    ).encode()
    return instruction_dataset_import(name=name, data=data, filename=f"{name}.jsonl")


def register_tiny(
    tiny_model_dir, *, prompt_format: str = "line_sft", max_new_tokens: int = 48
) -> LanguageModel:
    """The session's tiny model registered as "tiny" (it is loaded: tests that train use it)."""
    return language_model_register(
        name="tiny",
        name_or_path=storage_relative(tiny_model_dir),
        prompt_format=prompt_format,
        generation_defaults={"max_new_tokens": max_new_tokens},
    )


def fixture_examples() -> list[Example]:
    """Every row of fixtures/instructions_ja.jsonl as the training engine's examples."""
    with (FIXTURES / "instructions_ja.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [Example(r["instruction"], r["output"], r.get("input") or "") for r in rows]


def kill_mid_run(worker, reached, what: str, *, timeout: float = 900) -> None:
    """Wait until ``reached()`` (the run is part-way), then kill -9 the worker's process group.

    ``timeout`` only guards against a hung worker; ``what`` names the wait in its failure.
    """
    wait_for(
        reached, timeout=timeout, interval=0.05, message=f"{what}; worker log:\n{worker.log_tail()}"
    )
    worker.kill()


@pytest.fixture
def quiet_heartbeat(settings):
    # The runs are short; a heartbeat thread writing to the database meanwhile only adds noise.
    settings.RUN_HEARTBEAT_INTERVAL = 3600


@pytest.fixture
def base():
    # Never loaded: the tests that only create runs use it; tests that train use the tiny model.
    return language_model_register(name="base", name_or_path="tiny-0")


@pytest.fixture
def tiny(tiny_model_dir):
    return register_tiny(tiny_model_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir, tmp_path_factory):
    """`transformers serve` over the tiny model, started once per session (served models)."""
    from tests.generation.serving import TinyServer

    server = TinyServer(tiny_model_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


@pytest.fixture
def endpoint_proxy(tiny_server):
    """A fresh counting proxy in front of the session's server (see tests/generation/serving)."""
    from tests.generation.serving import CountingProxy

    proxy = CountingProxy(tiny_server.url)
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def tuned_adapter_dir(tiny_model_dir, model_storage):
    """A LoRA adapter of the tiny model (seed 0), 8 steps on 48 of the fixture's instructions,
    trained once per session (per xdist process) for the tests that use a tuned adapter without
    asserting on its training. Under MODEL_STORAGE, as a fine-tune run's adapter is."""
    import torch

    from generation.engine import render
    from generation.engine.presets import PRESETS
    from generation.engine.train import TrainConfig, train

    root = model_storage / "session-tuned-adapter"
    config = TrainConfig(
        method="lora",
        learning_rate=1e-2,
        epochs=2,
        max_steps=8,
        batch_size=4,
        gradient_accumulation=1,
        max_length=96,
        eval_fraction=0.0,
        save_steps=5,
        seed=0,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            model_path=str(tiny_model_dir),
            tokenizer=load_tokenizer(tiny_model_dir),
            examples=fixture_examples()[:48],
            template=render.template_from("line_sft", 1, PRESETS["line_sft"]),
            config=config,
            checkpoint_dir=root / "checkpoints",
            output_dir=root / "adapter",
        )
    finally:
        torch.set_num_threads(threads)
    return result.output_dir
