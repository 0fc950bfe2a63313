"""Which tasks a run may name, read from YAML without lm-eval; bad requests refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.catalog import available_tasks
from benchmarks.engine import catalogue
from benchmarks.models import BenchmarkRun
from benchmarks.runs import benchmark_run_create
from evalsite.errors import ServiceError
from generation.registry import language_model_register

JA_TASKS = {
    "ja_leaderboard_jaqket_v2",
    "ja_leaderboard_jcommonsenseqa",
    "ja_leaderboard_jnli",
    "ja_leaderboard_jsquad",
    "ja_leaderboard_marc_ja",
    "ja_leaderboard_mgsm",
    "ja_leaderboard_xlsum",
    "ja_leaderboard_xwinograd",
}


def test_the_catalogue_holds_the_team_tasks_and_lm_evals_japanese_group():
    known = available_tasks()
    mc, gen = known.tasks["ja_fixture_mc"], known.tasks["ja_fixture_gen"]
    assert (mc.kind, mc.output_type, mc.source) == ("task", "multiple_choice", "custom")
    assert (gen.kind, gen.output_type, gen.source) == ("task", "generate_until", "custom")
    group = known.tasks["japanese_leaderboard"]
    assert group.kind == "group" and set(group.members) == JA_TASKS
    assert known.tasks["ja_leaderboard_jcommonsenseqa"].output_type == "multiple_choice"
    assert known.tasks["ja_leaderboard_jsquad"].output_type == "generate_until"


def test_a_group_expands_to_its_tasks_in_order_without_duplicates():
    known = available_tasks()
    names = catalogue.expand(["ja_fixture_gen", "japanese_leaderboard", "ja_fixture_gen"], known)
    assert names[0] == "ja_fixture_gen" and set(names[1:]) == JA_TASKS and len(names) == 9


def test_an_unknown_task_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown benchmark task 'jglue_nope'; known tasks: "):
        catalogue.expand(["jglue_nope"], available_tasks())


def test_a_broken_team_yaml_is_left_out_with_its_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n", encoding="utf-8")
    (tmp_path / "nameless.yaml").write_text("output_type: generate_until\n", encoding="utf-8")
    (tmp_path / "good.yaml").write_text("task: good\noutput_type: generate_until\n")
    known = catalogue.catalogue([tmp_path], with_japanese=False)
    assert known.names() == ["good"]
    errors = {Path(bad.path).name: bad.error for bad in known.broken}
    assert set(errors) == {"bad.yaml", "nameless.yaml"}
    assert "bad.yaml: not a readable task config (" in errors["bad.yaml"]
    assert "names no task" in errors["nameless.yaml"]


@pytest.mark.django_db
@pytest.mark.postgres
def test_bad_requests_are_refused_and_nothing_is_written(tiny):
    served = language_model_register(
        name="served", endpoint_url="http://127.0.0.1:8000/v1", endpoint_model="m"
    )
    cases = [
        (dict(model=tiny, tasks=["nope"]), "unknown benchmark task 'nope'"),
        (dict(model=tiny, tasks=[]), "name at least one benchmark task"),
        (dict(model=tiny, tasks=["ja_fixture_mc"], scoring="vibes"), "scoring must be one of"),
        (dict(model=tiny, tasks=["ja_fixture_mc"], limit=0), "limit must be at least 1"),
        (dict(model=tiny, tasks=["ja_fixture_mc"], num_fewshot=99), "num_fewshot must be"),
        (dict(model=tiny, tasks=["ja_fixture_gen"], params={"beam": 4}), "params takes only"),
        (
            dict(model=served, tasks=["ja_fixture_mc", "ja_fixture_gen"]),
            "chat-completions API, which returns no log-likelihoods: multiple-choice task(s) "
            "ja_fixture_mc can only be scored generatively",
        ),
    ]
    for arguments, message in cases:
        with pytest.raises(ServiceError) as raised:
            benchmark_run_create(**arguments, enqueue=False)
        assert message in str(raised.value)
    assert not BenchmarkRun.objects.exists()
    # A served model may run the same tasks generatively.
    run = benchmark_run_create(
        model=served, tasks=["ja_fixture_mc", "ja_fixture_gen"], scoring="generative", enqueue=False
    )
    assert (run.tasks, run.total, run.done) == (["ja_fixture_mc", "ja_fixture_gen"], 2, 0)


def test_the_japanese_groups_own_code_imports_with_the_bench_extra():
    """The group's task modules import what the bench extra installs (lm-eval's
    japanese_leaderboard extra): XL-Sum's scorer normalises and splits Japanese with MeCab."""
    import importlib

    builtin = catalogue.lm_eval_tasks_dir() / catalogue.JAPANESE_GROUP_DIR
    modules = sorted(path.stem for path in builtin.glob("*.py") if path.stem != "__init__")
    assert "ja_leaderboard_xlsum" in modules
    loaded = {
        name: importlib.import_module(f"lm_eval.tasks.japanese_leaderboard.{name}")
        for name in modules
    }
    tokenizer = loaded["ja_leaderboard_xlsum"].MecabTokenizer()
    assert tokenizer.tokenize("富士山は日本で一番高い山です。😀") == [
        "富士", "山", "は", "日本", "で", "一番", "高い", "山", "です", "。"
    ]  # fmt: skip
