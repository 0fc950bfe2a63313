"""DPO from people's votes, end to end on the tiny model through a real gpu worker: the study's
votes become preference pairs, `finetune --method dpo --preferences-from STUDY` trains on them,
the held-out log-probability margin of chosen over rejected rises, and the tuned model is
registered with its lineage (base, pairs, study)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from transformers import AutoModelForCausalLM

from generation.engine.dpo import encode_pairs, logprob_margins, mean
from generation.engine.examples import split_examples
from generation.lineage import model_lineage
from generation.models import FineTuneRun
from generation.registry import language_model_load
from generation.templates import as_template, template_for
from generation.training.preferences import preference_examples
from tests.annotation.preference_votes import annotators, two_model_study, vote_all
from tests.generation.conftest import register_tiny

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
EVAL_FRACTION = 0.25
SEED = 0


def _people_prefer_careful_answers(person: int, position: int) -> str:
    """Two of three people (all three on every third question) prefer the careful answer (side
    a); on every eighth question all three call it a tie, which gives no pair."""
    if position % 8 == 0:
        return "tie"
    if person == 2 and position % 3:
        return "b"
    return "a"


def _held_out_margin(model, tokenizer, template, pairs) -> float:
    _, held_out = split_examples(pairs, EVAL_FRACTION, SEED)
    rows = encode_pairs(tokenizer, template, held_out, max_length=128)
    return mean(logprob_margins(model, [r for r in rows if r is not None]))


def test_dpo_from_a_studys_votes_raises_the_held_out_margin(
    shared_worker, tiny_model_dir, one_torch_thread
):
    tiny = register_tiny(tiny_model_dir)
    study = two_model_study(questions=32, voters=3)
    vote_all(study, annotators(3), _people_prefer_careful_answers)
    worker = shared_worker(queues="gpu", **ONE_THREAD)

    out = io.StringIO()
    call_command(
        "finetune",
        "--base", "tiny",
        "--method", "dpo",
        "--preferences-from", study.name,
        "--lr", "0.005", "--epochs", "3", "--batch-size", "4", "--grad-accum", "1",
        "--max-length", "128", "--eval-fraction", str(EVAL_FRACTION), "--seed", str(SEED),
        "--save-steps", "5", "--dpo-beta", "0.1", "--warmup", "0",
        "--wait",
        stdout=out,
    )  # fmt: skip
    printed = out.getvalue()
    print(printed)
    run = FineTuneRun.objects.select_related("preferences", "result_model").get()
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error + worker.log_tail()
    prefs = run.preferences
    assert prefs.pairs.count() == 28  # 32 questions, four ties dropped
    assert prefs.rendered_for == "tiny" and prefs.source_study_name == study.name
    assert (run.train_examples, run.eval_examples) == (21, 7)
    assert run.step == run.total_steps == 18  # 21 pairs in batches of 4, three epochs
    assert run.log_entries.filter(kind="train").count() == 18
    assert run.log_entries.filter(kind="eval").count() == 3
    assert run.checkpoint.endswith("checkpoint-18")

    tuned = run.result_model
    assert tuned.base_model == tiny and tuned.adapter_path
    lineage = model_lineage(tuned)
    assert lineage["base_model"] == "tiny" and lineage["method"] == "dpo"
    assert lineage["finetune_run_id"] == run.pk
    assert lineage["preferences"]["name"] == prefs.name
    assert lineage["preferences"]["study_name"] == study.name
    assert lineage["preferences"]["study_id"] == study.pk
    assert f"votes of study {study.name}" in printed

    template = as_template(template_for(tiny))
    pairs = preference_examples(prefs)
    tokenizer, after_model = language_model_load(model=tuned)
    before_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = _held_out_margin(before_model, tokenizer, template, pairs)
    after = _held_out_margin(after_model, tokenizer, template, pairs)
    print(f"held-out mean log-probability margin (chosen - rejected): {before:.3f} -> {after:.3f}")
    assert after > before
    # The worker measured the same held-out pairs and stored (and the command printed) it.
    assert run.metrics["heldout_pairs"] == 7
    assert run.metrics["margin_before"] == pytest.approx(before, abs=1e-3)
    assert run.metrics["margin_after"] == pytest.approx(after, abs=1e-3)
    assert "held-out margin" in printed
