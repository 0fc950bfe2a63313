"""Fine-tune runs through the services: validation, the data mix, cancel / resume / requeue,
full fine-tuning, merging an adapter and generating a data set's answers."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from evalsite.errors import ServiceError
from evalsite.runs import lifecycle
from generation.models import (
    DatasetAugmentation,
    FineTuneRun,
    GenerationRun,
    InstructionDataset,
    LanguageModel,
)
from generation.params import FULL_LEARNING_RATE
from generation.registry import language_model_register, prompt_set_import
from generation.runs import generation_run_create, generation_run_execute
from generation.training.data import (
    _augmentation_finish,
    instruction_dataset_augment,
)
from generation.training.finetune import (
    FINETUNE_RUN,
    NO_DATASETS,
    finetune_run_cancel,
    finetune_run_create,
    finetune_run_examples,
    finetune_run_execute,
    finetune_run_resume,
)
from generation.training.merge import language_model_merge, language_model_merge_request
from tests.conftest import FIXTURES
from tests.generation.conftest import instruction_dataset, register_tiny

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def tiny(tiny_model_dir):
    # The rinna format here: the shared tiny model trains and answers in line_sft.
    return register_tiny(tiny_model_dir, prompt_format="rinna", max_new_tokens=24)


# --- creating runs -----------------------------------------------------------------------------


def test_a_run_gets_the_documented_defaults(base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
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
    run = finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, None)], method="full", enqueue=False
    )
    assert run.learning_rate == FULL_LEARNING_RATE
    chosen = finetune_run_create(
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
    with pytest.raises(ServiceError) as caught:
        finetune_run_create(
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
    with pytest.raises(ServiceError, match=message):
        finetune_run_create(
            base_model=base, datasets=[(fixture_dataset, None)], params=params, enqueue=False
        )
    assert not FineTuneRun.objects.exists()


def test_the_mix_is_checked(base, fixture_dataset):
    small = instruction_dataset("small", [("質問", "答え"), ("別の質問", "別の答え")])
    cases = [
        ([], NO_DATASETS),
        ([(small, None), (small, 1)], "data set 'small' is listed twice"),
        ([(small, 3)], "data set 'small' has 2 rows; cannot sample 3"),
        ([(small, 0)], "rows for 'small' must be a positive number"),
    ]
    for mix, message in cases:
        with pytest.raises(ServiceError, match=message):
            finetune_run_create(base_model=base, datasets=mix, enqueue=False)


def test_an_adapter_cannot_be_the_base_of_a_run(base, fixture_dataset):
    adapter = language_model_register(
        name="lora", name_or_path="tiny-0", base_model=base, adapter_path="finetune/x/adapter"
    )
    with pytest.raises(ServiceError, match="is a LoRA adapter; merge it"):
        finetune_run_create(base_model=adapter, datasets=[(fixture_dataset, None)], enqueue=False)


def test_a_served_model_cannot_be_the_base_of_a_run(fixture_dataset):
    served = language_model_register(
        name="served", endpoint_url="http://127.0.0.1:9/v1", endpoint_model="tiny"
    )
    with pytest.raises(ServiceError, match="is served by an endpoint; there are no weights"):
        finetune_run_create(base_model=served, datasets=[(fixture_dataset, None)], enqueue=False)
    assert not FineTuneRun.objects.exists()


def test_a_run_records_the_template_version_its_examples_render_with(base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    assert (run.template.name, run.template.version) == ("line_sft", 1)


def test_the_resulting_model_name_must_be_free(base, fixture_dataset):
    with pytest.raises(ServiceError, match="a model named 'base' already exists"):
        finetune_run_create(
            base_model=base, datasets=[(fixture_dataset, None)], model_name="base", enqueue=False
        )


def test_a_mix_samples_rows_per_data_set_with_the_runs_seed(base, fixture_dataset):
    small = instruction_dataset("small", [(f"質問{i}", f"答え{i}") for i in range(10)])

    def mix(seed: int) -> list:
        run = finetune_run_create(
            base_model=base,
            datasets=[(fixture_dataset, 30), (small, None)],
            params={"seed": seed},
            enqueue=False,
        )
        return finetune_run_examples(run)

    first = mix(0)
    assert len(first) == 40
    fixture_instructions = set(fixture_dataset.examples.values_list("instruction", flat=True))
    assert sum(1 for e in first if e.instruction in fixture_instructions) == 30
    assert [e.instruction for e in first[30:]] == [f"質問{i}" for i in range(10)]
    assert mix(0) == first  # the same seed: the same rows, in the same order
    assert mix(1)[:30] != first[:30]


# --- cancel, resume, requeue -------------------------------------------------------------------


def test_a_queued_run_is_cancelled_at_once_and_can_be_resumed(base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    finetune_run_cancel(run=run)
    assert run.status == FineTuneRun.Status.CANCELLED and run.finished_at
    with pytest.raises(ServiceError, match="only queued or running runs"):
        finetune_run_cancel(run=run)
    # Nothing runs a cancelled run.
    assert finetune_run_execute(run_id=run.pk) is None
    finetune_run_resume(run=run)
    assert run.status == FineTuneRun.Status.QUEUED and run.finished_at is None
    with pytest.raises(ServiceError, match="only failed or cancelled runs"):
        finetune_run_resume(run=run)


def test_a_running_run_with_a_stale_heartbeat_is_requeued(base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    old = timezone.now() - dt.timedelta(hours=1)
    FineTuneRun.objects.filter(pk=run.pk).update(
        status=FineTuneRun.Status.RUNNING, worker="gone:1", heartbeat_at=old, started_at=old
    )
    fresh = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    FineTuneRun.objects.filter(pk=fresh.pk).update(
        status=FineTuneRun.Status.RUNNING, worker="alive:1", heartbeat_at=timezone.now()
    )
    assert lifecycle.requeue_stale(FINETUNE_RUN) == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.worker) == (FineTuneRun.Status.QUEUED, "")
    assert FineTuneRun.objects.get(pk=fresh.pk).status == FineTuneRun.Status.RUNNING


def test_a_run_that_cannot_load_its_base_fails_with_the_error(base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, 10)], enqueue=False)
    # "tiny-0" is not built in this test's storage: loading the tokenizer fails in the worker.
    LanguageModel.objects.filter(pk=base.pk).update(name_or_path="/nonexistent/model")
    run = finetune_run_execute(run_id=run.pk)
    assert run.status == FineTuneRun.Status.FAILED
    assert "nonexistent" in run.error
    assert run.attempts == 1 and run.finished_at


# --- training through the services (tiny model) -----------------------------------------------


@pytest.mark.slow
def test_full_fine_tuning_registers_a_standalone_model_that_generates(
    quiet_heartbeat, tiny, fixture_dataset, model_storage
):
    run = finetune_run_create(
        base_model=tiny,
        datasets=[(fixture_dataset, 40)],
        method="full",
        params={"max_steps": 4, "batch_size": 4, "gradient_accumulation": 1, "max_length": 96},
        model_name="tiny-full",
        enqueue=False,
    )
    run = finetune_run_execute(run_id=run.pk)
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error
    model = run.result_model
    assert model.name == "tiny-full" and model.base_model is None and not model.adapter_path
    assert model.name_or_path == f"{run.output_path}/model"
    assert model.prompt_format == "rinna" and model.generation_defaults == {"max_new_tokens": 24}
    assert (model_storage / model.name_or_path / "config.json").is_file()
    assert run.train_tokens > 0 and run.step == run.total_steps == 4
    prompt_set = prompt_set_import(
        name="two", data="question\n日本の首都は？\n挨拶して\n".encode(), filename="q.csv"
    )
    generation = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    generation = generation_run_execute(run_id=generation.pk)
    assert generation.status == GenerationRun.Status.SUCCEEDED, generation.error
    assert generation.answers.count() == 2


@pytest.mark.slow
def test_a_merged_adapter_becomes_a_standalone_model_with_the_same_answers(
    quiet_heartbeat, tiny, fixture_dataset
):
    run = finetune_run_create(
        base_model=tiny,
        datasets=[(fixture_dataset, 40)],
        params={"max_steps": 6, "learning_rate": 1e-2, "gradient_accumulation": 1},
        enqueue=False,
    )
    adapter = finetune_run_execute(run_id=run.pk).result_model
    assert adapter.adapter_path == f"{run.output_path}/adapter"
    with pytest.raises(ServiceError, match="has no LoRA adapter to merge"):
        language_model_merge_request(model=tiny)
    with pytest.raises(ServiceError, match="already exists"):
        language_model_merge_request(model=adapter, name="tiny")
    merged = language_model_merge(model=adapter, name="tiny-merged")
    assert merged.base_model is None and not merged.adapter_path
    assert merged.name_or_path.startswith("merged/") and merged.prompt_format == "rinna"

    prompt_set = prompt_set_import(
        name="fixture", data=(FIXTURES / "prompts_ja.jsonl").read_bytes(), filename="p.jsonl"
    )
    answers = []
    for model in (adapter, merged):
        generation = generation_run_create(
            model=model, prompt_set=prompt_set, params={"max_new_tokens": 12}, batch_size=50,
            enqueue=False,
        )  # fmt: skip
        generation = generation_run_execute(run_id=generation.pk)
        assert generation.status == GenerationRun.Status.SUCCEEDED, generation.error
        answers.append(list(generation.answers.values_list("text", flat=True)))
    same = sum(1 for a, b in zip(*answers, strict=True) if a == b)
    assert same >= 95, same  # greedy decoding; float rounding may flip a rare near-tie


@pytest.mark.slow
def test_answers_to_a_data_sets_unique_instructions_become_a_new_data_set(quiet_heartbeat, tiny):
    source = instruction_dataset(
        "source",
        [("日本の首都は？", "東京"), ("日本の首都は？", "東京です"), ("挨拶して", "こんにちは")],
    )
    augmentation = instruction_dataset_augment(
        dataset=source, model=tiny, name="answered", params={"max_new_tokens": 16}
    )
    run = augmentation.run
    assert run.total == 2  # unique (instruction, input) pairs
    assert list(run.prompt_set.questions.values_list("text", flat=True)) == [
        "日本の首都は？",
        "挨拶して",
    ]
    generation_run_execute(run_id=run.pk)
    augmentation = DatasetAugmentation.objects.get(pk=augmentation.pk)
    result = augmentation.result
    assert result is not None and result.name == "answered" and result.derived_from == source
    rows = list(result.examples.order_by("position").values_list("instruction", "output"))
    assert [q for q, _ in rows] == ["日本の首都は？", "挨拶して"][: len(rows)]
    assert all(a.strip() for _, a in rows)
    assert result.stats["augmentation"]["model"] == "tiny"
    # A second call (a redelivered task) writes nothing more.
    assert _augmentation_finish(run.pk) is None
    assert InstructionDataset.objects.filter(name="answered").count() == 1
