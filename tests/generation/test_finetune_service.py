"""Fine-tune runs through the services: validation, the data mix, cancel / resume / requeue,
full fine-tuning, merging an adapter and generating a data set's answers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import torch
from django.utils import timezone

from generation import services
from generation.models import (
    DatasetAugmentation,
    FineTuneRun,
    GenerationRun,
    InstructionDataset,
    LanguageModel,
)
from tests.conftest import FIXTURES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_torch_thread():
    # The tiny model gains nothing from threads; on a small shared machine they only contend.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dataset(name: str, rows: list[tuple[str, str]]) -> InstructionDataset:
    data = "".join(
        json.dumps({"instruction": q, "output": a}, ensure_ascii=False) + "\n" for q, a in rows
    ).encode()
    return services.instruction_dataset_import(name=name, data=data, filename=f"{name}.jsonl")


@pytest.fixture
def fixture_dataset():
    return services.instruction_dataset_import(
        name="instructions-ja",
        data=(FIXTURES / "instructions_ja.jsonl").read_bytes(),
        filename="instructions_ja.jsonl",
    )


@pytest.fixture
def base():
    # Not loaded by the tests that only create runs; tests that train use `tiny`.
    return services.language_model_register(name="base", name_or_path="tiny-0")


@pytest.fixture
def tiny(tiny_model_dir):
    return services.language_model_register(
        name="tiny",
        name_or_path=services.storage_relative(tiny_model_dir),
        prompt_format="rinna",
        generation_defaults={"max_new_tokens": 24},
    )


@pytest.fixture
def quiet_heartbeat(settings):
    settings.RUN_HEARTBEAT_INTERVAL = 3600


# --- creating runs -----------------------------------------------------------------------------


def test_a_run_gets_the_documented_defaults(base, fixture_dataset):
    run = services.finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], enqueue=False
    )
    assert run.status == FineTuneRun.Status.QUEUED
    assert (run.method, run.learning_rate, run.lora_r, run.lora_alpha) == ("lora", 2e-4, 8, 16)
    assert run.lora_dropout == 0.05 and run.target_modules == []
    assert (run.batch_size, run.gradient_accumulation, run.max_length) == (4, 4, 512)
    assert run.eval_fraction == 0.05 and run.warmup_ratio == 0.03 and run.epochs == 3
    assert run.output_path.startswith(f"finetune/run-{run.pk}-")
    # 268 rows, 13 held out, 255 / 4 -> 64 batches -> 16 updates per epoch, 3 epochs.
    assert run.total_steps == 48
    assert [(s.dataset, s.rows) for s in run.sources.all()] == [(fixture_dataset, None)]


def test_full_fine_tuning_defaults_to_a_small_learning_rate(base, fixture_dataset):
    run = services.finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], method="full", enqueue=False
    )
    assert run.learning_rate == services.FULL_LEARNING_RATE
    chosen = services.finetune_run_create(
        base_model=base,
        datasets=[(fixture_dataset, None)],
        method="full",
        params={"learning_rate": 1e-5},
        enqueue=False,
    )
    assert chosen.learning_rate == 1e-5


def test_qlora_is_refused_clearly_where_it_cannot_run(base, fixture_dataset):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes"):
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(services.ServiceError) as caught:
        services.finetune_run_create(
            base_model=base, datasets=[(fixture_dataset, None)], method="qlora", enqueue=False
        )
    assert str(caught.value).startswith("QLoRA needs a CUDA GPU and the bitsandbytes package")
    assert "Use method 'lora' or 'full'" in str(caught.value)
    assert not FineTuneRun.objects.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"learning_rate": 0}, "learning_rate must be above 0"),
        ({"batch_size": 0}, "batch_size must be a whole number, 1 or more"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"eval_fraction": 0.9}, "eval_fraction must be from 0 to 0.5"),
        ({"lora_dropout": 1}, "lora_dropout must be from 0 up to"),
        ({"target_modules": "q_proj"}, "target_modules must be a list of module names"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be true or false"),
        ({"rank": 8}, "unknown fine-tuning parameters: rank"),
    ],
)
def test_bad_hyper_parameters_are_refused(base, fixture_dataset, params, message):
    with pytest.raises(services.ServiceError, match=message):
        services.finetune_run_create(
            base_model=base, datasets=[(fixture_dataset, None)], params=params, enqueue=False
        )
    assert not FineTuneRun.objects.exists()


def test_the_mix_is_checked(base, fixture_dataset):
    small = _dataset("small", [("質問", "答え"), ("別の質問", "別の答え")])
    cases = [
        ([], services.NO_DATASETS),
        ([(small, None), (small, 1)], "data set 'small' is listed twice"),
        ([(small, 3)], "data set 'small' has 2 rows; cannot sample 3"),
        ([(small, 0)], "rows for 'small' must be a positive number"),
    ]
    for mix, message in cases:
        with pytest.raises(services.ServiceError, match=message):
            services.finetune_run_create(base_model=base, datasets=mix, enqueue=False)


def test_an_adapter_cannot_be_the_base_of_a_run(base, fixture_dataset):
    adapter = services.language_model_register(
        name="lora", name_or_path="tiny-0", base_model=base, adapter_path="finetune/x/adapter"
    )
    with pytest.raises(services.ServiceError, match="is a LoRA adapter; merge it"):
        services.finetune_run_create(
            base_model=adapter, datasets=[(fixture_dataset, None)], enqueue=False
        )


def test_the_resulting_model_name_must_be_free(base, fixture_dataset):
    with pytest.raises(services.ServiceError, match="a model named 'base' already exists"):
        services.finetune_run_create(
            base_model=base, datasets=[(fixture_dataset, None)], model_name="base", enqueue=False
        )


def test_a_mix_samples_rows_per_data_set_with_the_runs_seed(base, fixture_dataset):
    small = _dataset("small", [(f"質問{i}", f"答え{i}") for i in range(10)])

    def mix(seed: int) -> list:
        run = services.finetune_run_create(
            base_model=base,
            datasets=[(fixture_dataset, 30), (small, None)],
            params={"seed": seed},
            enqueue=False,
        )
        return services.finetune_run_examples(run)

    first = mix(0)
    assert len(first) == 40
    fixture_instructions = set(fixture_dataset.examples.values_list("instruction", flat=True))
    assert sum(1 for e in first if e.instruction in fixture_instructions) == 30
    assert [e.instruction for e in first[30:]] == [f"質問{i}" for i in range(10)]
    assert mix(0) == first  # the same seed: the same rows, in the same order
    assert mix(1)[:30] != first[:30]


# --- cancel, resume, requeue -------------------------------------------------------------------


def test_a_queued_run_is_cancelled_at_once_and_can_be_resumed(base, fixture_dataset):
    run = services.finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], enqueue=False
    )
    services.finetune_run_cancel(run=run)
    assert run.status == FineTuneRun.Status.CANCELLED and run.finished_at
    with pytest.raises(services.ServiceError, match="only queued or running runs"):
        services.finetune_run_cancel(run=run)
    # Nothing runs a cancelled run.
    assert services.finetune_run_execute(run_id=run.pk) is None
    services.finetune_run_resume(run=run)
    assert run.status == FineTuneRun.Status.QUEUED and run.finished_at is None
    with pytest.raises(services.ServiceError, match="only failed or cancelled runs"):
        services.finetune_run_resume(run=run)


def test_a_running_run_with_a_stale_heartbeat_is_requeued(base, fixture_dataset):
    run = services.finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], enqueue=False
    )
    old = timezone.now() - dt.timedelta(hours=1)
    FineTuneRun.objects.filter(pk=run.pk).update(
        status=FineTuneRun.Status.RUNNING, worker="gone:1", heartbeat_at=old, started_at=old
    )
    fresh = services.finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], enqueue=False
    )
    FineTuneRun.objects.filter(pk=fresh.pk).update(
        status=FineTuneRun.Status.RUNNING, worker="alive:1", heartbeat_at=timezone.now()
    )
    assert services.finetune_runs_requeue_stale() == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.worker) == (FineTuneRun.Status.QUEUED, "")
    assert FineTuneRun.objects.get(pk=fresh.pk).status == FineTuneRun.Status.RUNNING


def test_a_run_that_cannot_load_its_base_fails_with_the_error(base, fixture_dataset):
    run = services.finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, 10)], enqueue=False
    )
    # "tiny-0" is not built in this test's storage: loading the tokenizer fails in the worker.
    LanguageModel.objects.filter(pk=base.pk).update(name_or_path="/nonexistent/model")
    run = services.finetune_run_execute(run_id=run.pk)
    assert run.status == FineTuneRun.Status.FAILED
    assert "nonexistent" in run.error
    assert run.attempts == 1 and run.finished_at


# --- training through the services (tiny model) -----------------------------------------------


@pytest.mark.slow
def test_full_fine_tuning_registers_a_standalone_model_that_generates(
    quiet_heartbeat, tiny, fixture_dataset, model_storage
):
    run = services.finetune_run_create(
        base_model=tiny,
        datasets=[(fixture_dataset, 40)],
        method="full",
        params={"max_steps": 4, "batch_size": 4, "gradient_accumulation": 1, "max_length": 96},
        model_name="tiny-full",
        enqueue=False,
    )
    run = services.finetune_run_execute(run_id=run.pk)
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error
    model = run.result_model
    assert model.name == "tiny-full" and model.base_model is None and not model.adapter_path
    assert model.name_or_path == f"{run.output_path}/model"
    assert model.prompt_format == "rinna" and model.generation_defaults == {"max_new_tokens": 24}
    assert (model_storage / model.name_or_path / "config.json").is_file()
    assert run.train_tokens > 0 and run.step == run.total_steps == 4
    prompt_set = services.prompt_set_import(
        name="two", data="question\n日本の首都は？\n挨拶して\n".encode(), filename="q.csv"
    )
    generation = services.generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    generation = services.generation_run_execute(run_id=generation.pk)
    assert generation.status == GenerationRun.Status.SUCCEEDED, generation.error
    assert generation.answers.count() == 2


@pytest.mark.slow
def test_a_merged_adapter_becomes_a_standalone_model_with_the_same_answers(
    quiet_heartbeat, tiny, fixture_dataset
):
    run = services.finetune_run_create(
        base_model=tiny,
        datasets=[(fixture_dataset, 40)],
        params={"max_steps": 6, "learning_rate": 1e-2, "gradient_accumulation": 1},
        enqueue=False,
    )
    adapter = services.finetune_run_execute(run_id=run.pk).result_model
    assert adapter.adapter_path == f"{run.output_path}/adapter"
    with pytest.raises(services.ServiceError, match="has no LoRA adapter to merge"):
        services.language_model_merge_request(model=tiny)
    with pytest.raises(services.ServiceError, match="already exists"):
        services.language_model_merge_request(model=adapter, name="tiny")
    merged = services.language_model_merge(model=adapter, name="tiny-merged")
    assert merged.base_model is None and not merged.adapter_path
    assert merged.name_or_path.startswith("merged/") and merged.prompt_format == "rinna"

    prompt_set = services.prompt_set_import(
        name="fixture", data=(FIXTURES / "prompts_ja.jsonl").read_bytes(), filename="p.jsonl"
    )
    answers = []
    for model in (adapter, merged):
        generation = services.generation_run_create(
            model=model, prompt_set=prompt_set, params={"max_new_tokens": 12}, batch_size=50,
            enqueue=False,
        )  # fmt: skip
        generation = services.generation_run_execute(run_id=generation.pk)
        assert generation.status == GenerationRun.Status.SUCCEEDED, generation.error
        answers.append(list(generation.answers.values_list("text", flat=True)))
    same = sum(1 for a, b in zip(*answers, strict=True) if a == b)
    assert same >= 95, same  # greedy decoding; float rounding may flip a rare near-tie


@pytest.mark.slow
def test_answers_to_a_data_sets_unique_instructions_become_a_new_data_set(quiet_heartbeat, tiny):
    source = _dataset(
        "source",
        [("日本の首都は？", "東京"), ("日本の首都は？", "東京です"), ("挨拶して", "こんにちは")],
    )
    augmentation = services.instruction_dataset_augment(
        dataset=source, model=tiny, name="answered", params={"max_new_tokens": 16}
    )
    run = augmentation.run
    assert run.total == 2  # unique (instruction, input) pairs
    assert list(run.prompt_set.questions.values_list("text", flat=True)) == [
        "日本の首都は？",
        "挨拶して",
    ]
    services.generation_run_execute(run_id=run.pk)
    augmentation = DatasetAugmentation.objects.get(pk=augmentation.pk)
    result = augmentation.result
    assert result is not None and result.name == "answered" and result.derived_from == source
    rows = list(result.examples.order_by("position").values_list("instruction", "output"))
    assert [q for q, _ in rows] == ["日本の首都は？", "挨拶して"][: len(rows)]
    assert all(a.strip() for _, a in rows)
    assert result.stats["augmentation"]["model"] == "tiny"
    # A second call (a redelivered task) writes nothing more.
    assert services._augmentation_finish(run.pk) is None
    assert InstructionDataset.objects.filter(name="answered").count() == 1
