"""Training rows that are evaluation questions (issue 27): a fine-tune and a sweep warn, on their
page and in their command, with the counts (exact and near-duplicate after normalisation), on
real ELYZA-tasks-100 questions."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import call_command

from generation.engine.overlap import find_overlap, normalise
from generation.importers import ParsedQuestion
from generation.models import FineTuneRun
from generation.registry import language_model_register, prompt_set_create
from generation.training.overlap import finetune_overlap
from sweeps.models import Sweep
from tests.conftest import logged_in
from tests.generation.conftest import instruction_dataset
from tests.judging.factories import idle_judge

ELYZA = "elyza-tasks-100/data/test/elyza100_jp.jsonl"


def _elyza_inputs(external_data) -> list[str]:
    lines = (external_data / ELYZA).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["input"] for line in lines]


def _contaminated(inputs: list[str]) -> tuple[list[str], list[str]]:
    """8 evaluation questions (long ELYZA inputs), and training rows holding 6 of them: three as
    they are, one re-typed (full-width letters and digits, extra spaces: the same once
    normalised), two reworded a little (near-duplicates); then 60 other ELYZA tasks and a few
    fragments."""
    long = [q for q in inputs if len(q) >= 80]
    evaluation, others = long[:8], [q for q in inputs if q not in long[:8]][:60]
    retyped = re.sub(r"[A-Za-z0-9]", lambda m: chr(ord(m.group()) + 0xFEE0), evaluation[3])
    retyped = "  " + retyped.replace("。", "。 \n ", 1)
    training = [
        evaluation[0],
        evaluation[1],
        evaluation[2],
        retyped,
        evaluation[4].replace("。", "！", 1),
        evaluation[5][:-3] + "下さい。",
        *others,
        "if",
        "はい",
    ]
    return evaluation, training


def test_exact_and_near_duplicates_are_counted_after_normalisation(external_data):
    evaluation, training = _contaminated(_elyza_inputs(external_data))
    assert normalise("ＡＢＣ　１２３ \n x") == "abc 123 x"
    found = find_overlap(training, evaluation)
    assert found.exact == {0, 1, 2, 3}
    assert set(found.near) == {4, 5} and all(j >= 0.8 for j in found.near.values())
    assert found.questions == 6 and found.rows == 6
    # Nothing in common: nothing found.
    clean = find_overlap(training[6:], evaluation)
    assert clean.questions == 0 and clean.rows == 0


@pytest.fixture
def contaminated(db, external_data):
    evaluation, training = _contaminated(_elyza_inputs(external_data))
    prompt_set = prompt_set_create(
        name="elyza-eval-8",
        questions=[ParsedQuestion(line=n, text=q) for n, q in enumerate(evaluation, 1)],
    )
    dataset = instruction_dataset("elyza-train", [(q, "回答です。") for q in training])
    return prompt_set, dataset


WARNING = (
    "6 of 8 evaluation questions of prompt set 'elyza-eval-8' are in the training rows "
    "(4 exact, 2 near-duplicate after normalisation"
)


@pytest.mark.django_db
def test_the_finetune_command_and_page_warn_of_the_overlap(contaminated, admin_user):
    language_model_register(name="base", name_or_path="tiny-0")
    out = io.StringIO()
    call_command(
        "finetune", "--base", "base", "--dataset", "elyza-train", "--no-enqueue", stdout=out
    )
    assert f"warning: {WARNING}" in out.getvalue()
    assert "6 training rows" in out.getvalue()
    run = FineTuneRun.objects.get()
    (overlap,) = finetune_overlap(run)
    assert (overlap.exact, overlap.near, overlap.total) == (4, 2, 8)
    page = logged_in(admin_user).get(f"/admin/generation/finetunerun/{run.pk}/change/")
    assert WARNING.replace("'", "&#x27;") in page.content.decode()


@pytest.mark.django_db
def test_a_clean_finetune_says_nothing_of_overlap(contaminated, admin_user):
    instruction_dataset("clean", [("関係のない指示です。", "はい。")])
    language_model_register(name="base", name_or_path="tiny-0")
    out = io.StringIO()
    call_command("finetune", "--base", "base", "--dataset", "clean", "--no-enqueue", stdout=out)
    assert "warning" not in out.getvalue()
    run = FineTuneRun.objects.get()
    page = logged_in(admin_user).get(f"/admin/generation/finetunerun/{run.pk}/change/")
    assert "no prompt set&#x27;s question is in the training rows" in page.content.decode()


@pytest.mark.django_db
def test_the_sweep_command_and_page_warn_of_the_overlap(contaminated, admin_user, capsys):
    language_model_register(name="sweep-base", name_or_path="tiny-0")
    idle_judge()
    call_command(
        "sweep",
        "--base=sweep-base",
        "--dataset=elyza-train",
        "--rows=4",
        "--lr=1e-3",
        "--max-steps=2",
        "--prompt-set=elyza-eval-8",
        "--judge=heronquill-judge",
        "--name=contaminated",
    )
    assert f"warning: {WARNING}" in capsys.readouterr().out
    sweep = Sweep.objects.get(name="contaminated")
    page = logged_in(admin_user).get(f"/staff/sweeps/{sweep.pk}/").content.decode()
    assert 'id="overlap"' in page and WARNING.replace("'", "&#x27;") in page
