"""DPO runs without the worker: what a run accepts, the command's preference options, the
engine's tokenization (the app's renderer, not TRL's) and its stop / resume from a checkpoint."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from evalsite.errors import ServiceError
from generation.engine import render
from generation.engine.dpo import PreferenceExample, encode_pair, train_dpo
from generation.engine.train import TrainConfig
from generation.models import FineTuneRun, PreferenceDataset
from generation.templates import as_template, template_latest
from generation.training.finetune import finetune_run_create
from generation.training.preferences import preference_dataset_create
from tests.generation.conftest import instruction_dataset

QUESTIONS = ["お茶をおいしく入れるこつは？", "朝早く起きる方法を教えて。", "傘の干し方は？"]
PAIRS = [
    PreferenceExample(
        prompt="", question=q, chosen=f"{q[:3]}は、手順を一つずつ確かめます。", rejected="さあ。"
    )
    for q in QUESTIONS * 4
]


def _prefs(name: str = "prefs", n: int = 3) -> PreferenceDataset:
    return preference_dataset_create(
        name=name,
        pairs=[
            {"prompt": f"問い{i}", "chosen": "丁寧に答えます。", "rejected": "さあ。"}
            for i in range(n)
        ],
    )


@pytest.mark.django_db
def test_a_dpo_run_takes_preferences_and_nothing_else(base):
    prefs = _prefs(n=8)
    run = finetune_run_create(
        base_model=base, method="dpo", preferences=prefs, params={"dpo_beta": 0.2}, enqueue=False
    )
    assert (run.method, run.preferences, run.dpo_beta, run.is_lora) == ("dpo", prefs, 0.2, True)
    assert run.total_steps == 3  # 7 pairs (one held out) are one step of 4 x 4, three epochs
    data = instruction_dataset("sft-rows", [("挨拶して", "こんにちは。")])
    with pytest.raises(ServiceError, match="choose a preference data set"):
        finetune_run_create(base_model=base, method="dpo", enqueue=False)
    with pytest.raises(ServiceError, match="leave the data sets out"):
        finetune_run_create(
            base_model=base, method="dpo", preferences=prefs, datasets=[(data, None)]
        )
    with pytest.raises(ServiceError, match="preference pairs are for method dpo"):
        finetune_run_create(base_model=base, datasets=[(data, None)], preferences=prefs)
    with pytest.raises(ServiceError, match="must be above 0|dpo_beta"):
        finetune_run_create(
            base_model=base, method="dpo", preferences=prefs, params={"dpo_beta": 0}
        )
    assert FineTuneRun.objects.count() == 1


@pytest.mark.django_db
def test_the_command_takes_a_jsonl_file_or_a_stored_set(base, tmp_path):
    path = tmp_path / "votes-export.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"問い{i}", "chosen": "はい。", "rejected": "いいえ。"}) + "\n"
            for i in range(4)
        ),
        encoding="utf-8",
    )
    out = io.StringIO()
    call_command(
        "finetune", "--base", "base", "--method", "dpo", "--preferences", str(path),
        "--no-enqueue", stdout=out,
    )  # fmt: skip
    run = FineTuneRun.objects.get()
    assert run.preferences.name == "votes-export" and run.preferences.pairs.count() == 4
    call_command(
        "finetune", "--base", "base", "--method", "dpo", "--preferences", "votes-export",
        "--no-enqueue", stdout=out,
    )  # fmt: skip
    assert PreferenceDataset.objects.count() == 1
    with pytest.raises(CommandError, match="needs --preferences FILE"):
        call_command("finetune", "--base", "base", "--method", "dpo", "--no-enqueue")
    with pytest.raises(CommandError, match="no preference data set or file named 'nothing'"):
        call_command(
            "finetune", "--base", "base", "--method", "dpo", "--preferences", "nothing",
            "--no-enqueue",
        )  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c"}\n', encoding="utf-8")
    with pytest.raises(CommandError, match="bad.jsonl, line 1: no 'rejected' field"):
        call_command(
            "finetune", "--base", "base", "--method", "dpo", "--preferences", str(bad),
            "--no-enqueue",
        )  # fmt: skip
    with pytest.raises(CommandError, match="are for --method dpo"):
        call_command("finetune", "--base", "base", "--preferences", "votes-export")
    with pytest.raises(CommandError, match="no study named"):
        call_command(
            "finetune", "--base", "base", "--method", "dpo", "--preferences-from", "nope",
            "--no-enqueue",
        )  # fmt: skip
    # A run refused after its file was imported keeps nothing of it.
    again = tmp_path / "imported-then-refused.jsonl"
    again.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(CommandError, match="already"):
        call_command(
            "finetune", "--base", "base", "--method", "dpo", "--preferences", str(again),
            "--model-name", "base", "--no-enqueue",
        )  # fmt: skip
    assert not PreferenceDataset.objects.filter(name="imported-then-refused").exists()


@pytest.mark.django_db
def test_pairs_are_tokenized_as_generation_renders_the_prompt(tokenizer):
    template = as_template(template_latest("rinna"))
    pair = PreferenceExample(
        prompt="", question="一行目\n二行目", chosen="はい\nそうです", rejected="いいえ"
    )
    row = encode_pair(tokenizer, template, pair, max_length=256)
    messages = render.conversation([pair.question], [])
    assert row["prompt_ids"] == render.encode_prompt(template, messages, tokenizer)
    assert row["chosen_ids"][-1] == row["rejected_ids"][-1] == tokenizer.eos_token_id
    # The reply is written as the template writes it (rinna: newlines as <NL>).
    assert "<NL>" in tokenizer.decode(row["chosen_ids"])
    # A pair with only a rendered prompt (an imported JSONL) keeps that prompt, token for token.
    plain = PreferenceExample(
        prompt="ユーザー: やあ<NL>システム: ", chosen="はい", rejected="いいえ"
    )
    row = encode_pair(tokenizer, template, plain, max_length=256)
    assert row["prompt_ids"] == render.tokenize(tokenizer, plain.prompt)
    assert encode_pair(tokenizer, template, plain, max_length=len(row["prompt_ids"])) is None


@pytest.mark.slow
@pytest.mark.django_db
def test_a_stopped_run_resumes_from_its_checkpoint(
    tiny_model_dir, tokenizer, tmp_path, one_torch_thread
):
    template = as_template(template_latest("line_sft"))
    config = TrainConfig(
        method="dpo", learning_rate=5e-3, epochs=1, max_steps=4, batch_size=2,
        gradient_accumulation=1, eval_fraction=0.0, save_steps=2, max_length=96,
    )  # fmt: skip
    where = {"checkpoint_dir": tmp_path / "ck", "output_dir": tmp_path / "adapter"}
    steps, saved = [], []

    def stop_after_two() -> bool:
        # Asked at the end of each step, before that step's loss is logged.
        return len(steps) >= 1

    first = train_dpo(
        model_path=str(tiny_model_dir), tokenizer=tokenizer, pairs=PAIRS, template=template,
        config=config, on_log=lambda e: steps.extend(x.step for x in e if x.kind == "train"),
        should_stop=stop_after_two, on_save=lambda path, step: saved.append(step), **where,
    )  # fmt: skip
    assert first.stopped and first.global_step == 2 and first.output_dir is None
    assert saved == [2]
    second = train_dpo(
        model_path=str(tiny_model_dir), tokenizer=tokenizer, pairs=PAIRS, template=template,
        config=config, **where,
    )  # fmt: skip
    assert (second.resumed_from_step, second.global_step, second.stopped) == (2, 4, False)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
