"""Fine-tuning from Django admin: the action's form, the run page with its loss chart, and the
data set actions."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from generation.models import DatasetAugmentation, FineTuneLog, FineTuneRun
from generation.training.data import instruction_dataset_import
from generation.training.finetune import finetune_run_create
from tests.generation.conftest import instruction_dataset

pytestmark = pytest.mark.django_db

MODELS_URL = "/admin/generation/languagemodel/"
RUNS_URL = "/admin/generation/finetunerun/"
DATASETS_URL = "/admin/generation/instructiondataset/"

# The fine-tune form as the admin renders it (the run model's defaults).
SETTINGS = {
    "learning_rate": "",
    "epochs": "1",
    "max_steps": "0",
    "batch_size": "4",
    "gradient_accumulation": "1",
    "max_length": "256",
    "warmup_ratio": "0.03",
    "weight_decay": "0",
    "seed": "0",
    "eval_fraction": "0.05",
    "lora_r": "8",
    "lora_alpha": "16",
    "lora_dropout": "0.05",
    "target_modules": "[]",
    "save_steps": "50",
    "save_total_limit": "2",
    "processes": "1",
    "dpo_beta": "0.1",
}


def _run(base, dataset, **params) -> FineTuneRun:
    return finetune_run_create(
        base_model=base, datasets=[(dataset, None)], params=params, enqueue=False
    )


def test_the_fine_tune_action_asks_for_the_settings_first(
    client, admin_user, base, fixture_dataset
):
    client.force_login(admin_user)
    response = client.post(MODELS_URL, {"action": "fine_tune", ACTION_CHECKBOX_NAME: [base.pk]})
    assert response.status_code == 200
    page = response.content.decode()
    for field in ("datasets", "rows", "method", "lora_r", "lora_alpha", "eval_fraction"):
        assert f'name="{field}"' in page
    assert 'value="8"' in page and 'value="16"' in page  # LoRA r and alpha defaults
    assert not FineTuneRun.objects.exists()


def test_the_fine_tune_action_queues_a_run_on_a_mix(
    client, admin_user, base, fixture_dataset, django_capture_on_commit_callbacks
):
    small = instruction_dataset("small", [("質問", "答え")])
    client.force_login(admin_user)
    form = {
        **SETTINGS,
        "action": "fine_tune",
        ACTION_CHECKBOX_NAME: [base.pk],
        "apply": "1",
        "datasets": [fixture_dataset.pk, small.pk],
        "rows": "instructions-ja=100",
        "method": "lora",
        "model_name": "base-tuned",
        "seed": "7",
        "batch_size": "2",
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(MODELS_URL, form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    run = FineTuneRun.objects.get()
    assert (run.base_model, run.model_name, run.seed, run.batch_size) == (base, "base-tuned", 7, 2)
    assert run.learning_rate == 2e-4
    assert sorted((s.dataset.name, s.rows) for s in run.sources.all()) == [
        ("instructions-ja", 100),
        ("small", None),
    ]
    assert len(callbacks) == 1  # the task is sent once the run is committed


def test_a_rows_entry_naming_an_unchosen_set_is_an_error(client, admin_user, base, fixture_dataset):
    client.force_login(admin_user)
    response = client.post(
        MODELS_URL,
        {
            "action": "fine_tune",
            ACTION_CHECKBOX_NAME: [base.pk],
            "apply": "1",
            "datasets": [fixture_dataset.pk],
            "rows": "other=5",
            "method": "lora",
        },
    )
    assert response.status_code == 200
    assert "&#x27;other&#x27; is not one of the chosen data sets" in response.content.decode()
    assert not FineTuneRun.objects.exists()


def test_qlora_from_the_admin_says_why_it_is_refused(client, admin_user, base, fixture_dataset):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes"):
        pytest.skip("bitsandbytes is installed here")
    client.force_login(admin_user)
    data = {
        **SETTINGS,
        "action": "fine_tune",
        ACTION_CHECKBOX_NAME: [base.pk],
        "apply": "1",
        "datasets": [fixture_dataset.pk],
        "method": "qlora",
    }
    response = client.post(MODELS_URL, data, follow=True)
    assert "QLoRA needs a CUDA GPU and the bitsandbytes package" in response.content.decode()
    assert not FineTuneRun.objects.exists()


def test_the_run_page_shows_progress_and_the_loss_chart_and_follows_it_while_running(
    client, admin_user, base, fixture_dataset
):
    run = _run(base, fixture_dataset)
    FineTuneRun.objects.filter(pk=run.pk).update(status="running", step=3, total_steps=48)
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.0)]:
        FineTuneLog.objects.create(run=run, kind="train", step=step, loss=loss, learning_rate=1e-4)
    FineTuneLog.objects.create(run=run, kind="eval", step=3, loss=2.2, epoch=1.0)
    client.force_login(admin_user)
    page = client.get(f"{RUNS_URL}{run.pk}/change/").content.decode()
    # The page polls the run's progress (evalsite/runs/static/runs/live.js) instead of reloading.
    assert f'data-progress-url="/api/runs/finetune/{run.pk}/progress/" data-active="1"' in page
    assert "step 3/48 (6%)" in page
    assert "2.0000 (step 3)" in page  # last loss
    chart_url = f"{RUNS_URL}{run.pk}/loss-chart.svg"
    assert f'<img class="loss-chart" src="{chart_url}"' in page
    assert "instructions-ja x all" in page
    chart = client.get(chart_url)
    assert chart["Content-Type"] == "image/svg+xml"
    # The chart's strings stand beside their glyphs as comments in matplotlib's SVG.
    svg = chart.content.decode()
    assert "<!-- training loss -->" in svg and "<!-- held-out loss -->" in svg

    FineTuneRun.objects.filter(pk=run.pk).update(status="succeeded", step=48)
    page = client.get(f"{RUNS_URL}{run.pk}/change/").content.decode()
    assert 'data-active="0"' in page


def test_the_run_page_escapes_what_it_shows(client, admin_user, base):
    evil = instruction_dataset_import(
        name="<script>alert(1)</script>",
        data=b'{"instruction": "q", "output": "a"}\n',
        filename="e.jsonl",
    )
    run = _run(base, evil)
    FineTuneRun.objects.filter(pk=run.pk).update(status="failed", error="<img src=x onerror=1>")
    client.force_login(admin_user)
    page = client.get(f"{RUNS_URL}{run.pk}/change/").content.decode()
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; x all" in page


def test_the_loss_chart_is_an_image_of_the_site_for_staff_who_may_view_the_run(
    client, admin_user, staff_user, annotator, base, fixture_dataset
):
    run = _run(base, fixture_dataset)
    chart_url = f"{RUNS_URL}{run.pk}/loss-chart.svg"
    client.force_login(admin_user)
    page = client.get(f"{RUNS_URL}{run.pk}/change/")
    assert "img-src 'self'" in page["Content-Security-Policy"]  # no inline markup needed
    assert "<!-- no loss logged yet -->" in client.get(chart_url).content.decode()
    assert client.get(f"{RUNS_URL}999999/loss-chart.svg").status_code == 404

    client.force_login(staff_user)
    assert client.get(chart_url).status_code == 200
    staff_user.user_permissions.remove(
        *staff_user.user_permissions.filter(codename__in=["view_finetunerun", "change_finetunerun"])
    )
    assert client.get(chart_url).status_code == 403
    client.force_login(annotator)
    assert client.get(chart_url).status_code == 302  # to the admin's login page


def test_cancel_and_resume_actions(client, admin_user, base, fixture_dataset):
    run = _run(base, fixture_dataset)
    client.force_login(admin_user)
    client.post(RUNS_URL, {"action": "cancel_runs", ACTION_CHECKBOX_NAME: [run.pk]})
    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.CANCELLED
    client.post(RUNS_URL, {"action": "resume_runs", ACTION_CHECKBOX_NAME: [run.pk]})
    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.QUEUED
    response = client.post(
        RUNS_URL, {"action": "resume_runs", ACTION_CHECKBOX_NAME: [run.pk]}, follow=True
    )
    assert "only failed or cancelled runs can be resumed" in response.content.decode()


def test_merging_a_model_without_an_adapter_is_refused(client, admin_user, base):
    client.force_login(admin_user)
    response = client.post(
        MODELS_URL,
        {"action": "merge_adapter", ACTION_CHECKBOX_NAME: [base.pk], "apply": "1", "name": ""},
        follow=True,
    )
    assert "has no LoRA adapter to merge" in response.content.decode()


def test_the_augment_action_queues_a_generation_run(
    client, admin_user, base, fixture_dataset, django_capture_on_commit_callbacks
):
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            DATASETS_URL,
            {
                "action": "augment",
                ACTION_CHECKBOX_NAME: [fixture_dataset.pk],
                "apply": "1",
                "model": base.pk,
                "name": "answered-by-base",
                "seed": "0",
                "batch_size": "8",
                "params": json.dumps({"max_new_tokens": 64}),
            },
        )
    assert response.status_code == 302, response.content.decode()[-3000:]
    augmentation = DatasetAugmentation.objects.get()
    assert augmentation.name == "answered-by-base" and augmentation.source == fixture_dataset
    assert augmentation.run.total == fixture_dataset.stats["unique_instructions"]
    assert augmentation.run.params == {"max_new_tokens": 64}
    assert len(callbacks) == 1


def test_the_token_statistics_action_asks_for_a_model_then_counts_with_its_tokenizer(
    client, admin_user, tiny, fixture_dataset
):
    client.force_login(admin_user)
    chosen = {"action": "token_statistics", ACTION_CHECKBOX_NAME: [fixture_dataset.pk]}
    page = client.post(DATASETS_URL, chosen).content.decode()
    assert "Token statistics for:" in page and 'name="model"' in page

    response = client.post(DATASETS_URL, {**chosen, "apply": "1", "model": tiny.pk}, follow=True)
    assert "Token statistics of instructions-ja updated." in response.content.decode()
    fixture_dataset.refresh_from_db()
    assert fixture_dataset.stats["tokens"]["model"] == "tiny"


def test_the_data_set_page_lists_statistics_and_first_rows(client, admin_user, fixture_dataset):
    client.force_login(admin_user)
    page = client.get(f"{DATASETS_URL}{fixture_dataset.pk}/change/").content.decode()
    assert "unique instructions (instruction + input)" in page
    first = fixture_dataset.examples.order_by("position").first()
    assert first.instruction in page
    listing = client.get(DATASETS_URL).content.decode()
    assert "Import from file" in listing and str(fixture_dataset.stats["rows"]) in listing
