"""A real LoRA fine-tune of the tiny model: the loss falls, the adapter is saved and loads back,
and the tuned model answers the fixture questions differently from its base."""

from __future__ import annotations

import statistics

import pytest

from generation.models import FineTuneLog, FineTuneRun, GenerationRun
from generation.registry import language_model_load, prompt_set_import
from generation.runs import generation_run_create, generation_run_execute
from generation.training.finetune import finetune_run_create, finetune_run_execute
from tests.conftest import FIXTURES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db,
    pytest.mark.usefixtures("one_torch_thread"),
]

QUICK_LORA = {
    "max_steps": 50,
    "learning_rate": 1e-2,  # the tiny model's LoRA has few weights; 2e-4 would barely move
    "batch_size": 4,
    "gradient_accumulation": 1,
    "max_length": 128,
    "warmup_ratio": 0.1,
    "eval_fraction": 0.05,
    "save_steps": 25,
}


def _generate(model, prompt_set) -> dict[int, str]:
    run = generation_run_create(model=model, prompt_set=prompt_set, batch_size=25, enqueue=False)
    generation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    return dict(run.answers.values_list("question_id", "text"))


def test_a_lora_run_lowers_the_loss_and_its_model_answers_differently(
    quiet_heartbeat, fixture_dataset, tiny, model_storage
):
    run = finetune_run_create(
        base_model=tiny, datasets=[(fixture_dataset, None)], params=QUICK_LORA, enqueue=False
    )
    finetune_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error
    assert (run.step, run.total_steps) == (50, 50)
    assert run.target_modules == ["query_key_value"]  # chosen for GPT-NeoX
    assert run.train_examples + run.eval_examples + run.skipped_examples == 268
    assert run.eval_examples >= 10 and run.train_examples >= 200

    losses = list(
        run.log_entries.filter(kind=FineTuneLog.Kind.TRAIN)
        .order_by("step")
        .values_list("loss", flat=True)
    )
    assert len(losses) == 50
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    assert last < first - 0.5, (first, last)
    rates = run.log_entries.filter(kind=FineTuneLog.Kind.TRAIN).values_list(
        "learning_rate", flat=True
    )
    assert all(rate is not None for rate in rates)
    assert run.log_entries.filter(kind=FineTuneLog.Kind.EVAL).exists()

    tuned = run.result_model
    assert tuned is not None
    assert tuned.base_model == tiny and tuned.prompt_format == tiny.prompt_format
    assert not tuned.adapter_path.startswith("/")
    assert (model_storage / tuned.adapter_path / "adapter_config.json").is_file()
    assert (model_storage / run.checkpoint / "trainer_state.json").is_file()

    # The adapter loads back on its base, through the same path generation uses.
    from peft import PeftModel

    _, loaded = language_model_load(model=tuned)
    assert isinstance(loaded, PeftModel)

    prompt_set = prompt_set_import(
        name="fixture", data=(FIXTURES / "prompts_ja.jsonl").read_bytes(), filename="p.jsonl"
    )
    base_answers = _generate(tiny, prompt_set)
    tuned_answers = _generate(tuned, prompt_set)
    assert len(base_answers) == len(tuned_answers) == 100
    differing = sum(1 for q, text in tuned_answers.items() if text != base_answers[q])
    assert differing >= 50, differing
    assert sum(1 for text in tuned_answers.values() if text.strip()) >= 50
