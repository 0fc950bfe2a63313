"""The input findings of the second attacker probe (issue 24, finding 6), through the real
endpoints: bad input is refused with a message saying what is wrong and changes nothing; a
sweep's grid is capped; a benchmark run's decoding is typed and bounded.

Each test through an endpoint, command or service failed on the code the probe ran against: a
server error (or a crash of the command), a bad value accepted, or a message that did not say
what was wrong.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from annotation import preferences
from benchmarks.models import BenchmarkRun
from evalsite import jsonguard, query
from evalsite.errors import ServiceError
from evolution.models import EvolutionRun
from evolution.runs import evolution_run_create
from generation import importers
from generation.importers import ParsedQuestion
from generation.models import (
    FineTuneRun,
    GenerationRun,
    InstructionDataset,
    LanguageModel,
    PreferenceDataset,
    PromptSet,
    Question,
)
from generation.registry import language_model_register, prompt_set_create, prompt_set_import
from generation.training.finetune import finetune_run_create
from sweeps import services as sweeps
from sweeps.models import Sweep
from tests.annotation.preference_votes import annotators, two_model_study, vote_all
from tests.benchmarks.conftest import bench_staff
from tests.conftest import logged_in
from tests.evolution.conftest import evolution_staff
from tests.generation.conftest import instruction_dataset

# The shipped judge prompts (autouse: a sweep needs one).
from tests.judging.conftest import _judge_prompt_presets  # noqa: F401
from tests.judging.factories import idle_judge
from tests.sweeps.conftest import TINY_SWEEP

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SUPERSCRIPT_TWO = "²"  # str.isdigit() says yes; int() raises
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def base():
    return language_model_register(name="probe-base", name_or_path="tiny-0")


def _text(response) -> str:
    return response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')


def _errors(response) -> str:
    """The messages of an API's 400, one a line."""
    found = response.json().values()
    return "\n".join(str(m) for ms in found for m in (ms if isinstance(ms, list) else [ms]))


# --- whole numbers in query strings --------------------------------------------------------------


def test_whole_numbers_are_ascii_digits_only():
    assert query.whole_number("12", name="n") == 12
    assert query.whole_number("-1", name="n", low=-1) == -1
    for text in [SUPERSCRIPT_TWO, "٣", "①", "1" * 30, " 1", "1\n", "", "-1", "+1", "1e3"]:
        with pytest.raises(ValueError, match="n must be"):
            query.whole_number(text, name="n")
    with pytest.raises(ValueError, match="n must be from 0 to 10 .got 11."):
        query.whole_number("11", name="n", high=10)


def test_a_superscript_study_id_is_a_400_on_the_compare_api_and_page(staff_user):
    client = logged_in(staff_user)
    api = client.get("/api/studies/compare/", {"first": SUPERSCRIPT_TWO, "second": "1"})
    assert api.status_code == 400
    assert "digits 0-9" in api.json()["first"]
    page = client.get("/staff/compare/", {"first": SUPERSCRIPT_TWO, "second": SUPERSCRIPT_TWO})
    assert page.status_code == 400
    assert "Choose two studies." in page.content.decode()


def test_a_superscript_log_after_is_a_400(staff_user, base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    client = logged_in(staff_user)
    for value in [SUPERSCRIPT_TWO, "-2", "x"]:
        response = client.get(f"/api/finetune-runs/{run.pk}/", {"log_after": value})
        assert response.status_code == 400, value
        assert "log_after must be" in response.json()["log_after"]
    assert client.get(f"/api/finetune-runs/{run.pk}/", {"log_after": "-1"}).status_code == 200


def test_a_superscript_round_is_a_400(django_user_model, base):
    source = instruction_dataset("probe-source", [("質問です。", "答えです。")])
    run = evolution_run_create(source=source, model=base, enqueue=False)
    client = logged_in(evolution_staff(django_user_model))
    url = f"/api/evolution-runs/{run.pk}/items/"
    response = client.get(url, {"round": SUPERSCRIPT_TWO})
    assert response.status_code == 400
    assert "round must be a whole number" in response.json()["round"]
    assert client.get(url, {"round": "1"}).status_code == 200
    assert EvolutionRun.objects.get().status == EvolutionRun.Status.QUEUED


def test_a_superscript_study_given_to_the_preference_command_is_not_found():
    with pytest.raises(CommandError, match="no study named"):
        call_command("export_preferences", SUPERSCRIPT_TWO)


# --- evolver pair uploads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"instruction": ' + DEEP + ', "evolved": "b"}', "nested more than"),
        ('{"instruction": "a\\ud800", "evolved": "b"}', "lone surrogate"),
        ('{"instruction": "a\\u0000", "evolved": "b"}', "NUL character"),
    ],
    ids=["deep", "surrogate", "nul"],
)
def test_a_hostile_evolver_pair_file_is_refused_and_writes_nothing(admin_user, base, line, problem):
    good = json.dumps({"instruction": "朝ごはんは？", "evolved": "健康的な朝ごはんは？"})
    upload = SimpleUploadedFile("pairs.jsonl", f"{good}\n{line}\n".encode())
    response = logged_in(admin_user).post(
        "/admin/evolution/evolutionrun/train-evolver/",
        {"file": upload, "base_model": base.pk, "name": "evolver", "epochs": 1, "learning_rate": 1},
    )
    # The admin shows the form again with the error (its convention for a refused upload).
    assert response.status_code == 200
    assert "pairs.jsonl, line 2: " in _text(response) and problem in _text(response)
    assert not InstructionDataset.objects.exists()
    assert not FineTuneRun.objects.exists()


# --- admin and API imports ------------------------------------------------------------------------


def test_the_importers_limits_are_the_columns_lengths():
    for field, limit in importers.FIELD_LIMITS.items():
        assert Question._meta.get_field(field).max_length == limit


LONG_CATEGORY = "c" * 300
TOO_LONG = importers.TOO_LONG.format(field="category", length=300, limit=100)
# (file name, content, the error: the file's line and what is wrong). A CSV's header is line 1.
PROMPT_FILES = [
    (
        "nul.csv",
        b"question,category\nfine,a\nbad\x00question,b\n",
        "line 3: " + importers.NUL_BYTE,
    ),
    (
        "nul.jsonl",
        b'{"question": "fine"}\n{"question": "bad\\u0000"}\n',
        "line 2: " + jsonguard.NUL_CHARACTER,
    ),
    (
        "long.csv",
        f"question,category\nfine,a\nlong,{LONG_CATEGORY}\n".encode(),
        "line 3: " + TOO_LONG,
    ),
    (
        "long.jsonl",
        (
            '{"question": "fine"}\n' + json.dumps({"question": "q", "category": LONG_CATEGORY})
        ).encode(),
        "line 2: " + TOO_LONG,
    ),
]


@pytest.mark.parametrize(("filename", "content", "problem"), PROMPT_FILES, ids=lambda v: str(v)[:9])
def test_a_prompt_file_with_a_nul_or_a_long_category_is_refused_by_line(
    admin_user, staff_user, filename, content, problem
):
    admin = logged_in(admin_user).post(
        "/admin/generation/promptset/import/",
        {"name": "probe", "file": SimpleUploadedFile(filename, content)},
    )
    # The admin shows the form again with the error (its convention for a refused upload).
    assert admin.status_code == 200
    assert f"{filename}, {problem}" in _text(admin)
    api = logged_in(staff_user).post(
        "/api/prompt-sets/import/", {"name": "probe", "file": SimpleUploadedFile(filename, content)}
    )
    assert api.status_code == 400
    assert f"{filename}, {problem}" in _errors(api)
    assert not PromptSet.objects.exists() and not Question.objects.exists()


@pytest.mark.parametrize(
    ("filename", "content", "problem"),
    [
        ("nul.csv", b"instruction,output\nfine,ok\nbad\x00,ok\n", "line 3: " + importers.NUL_BYTE),
        (
            "nul.jsonl",
            b'{"instruction": "fine", "output": "ok"}\n{"instruction": "a", "output": "\\u0000"}\n',
            "line 2: " + jsonguard.NUL_CHARACTER,
        ),
    ],
    ids=["csv", "jsonl"],
)
def test_instruction_data_with_a_nul_is_refused_by_line(
    admin_user, staff_user, filename, content, problem
):
    response = logged_in(admin_user).post(
        "/admin/generation/instructiondataset/import/",
        {"name": "probe", "file": SimpleUploadedFile(filename, content)},
    )
    assert response.status_code == 200
    assert f"{filename}, {problem}" in _text(response)
    api = logged_in(staff_user).post(
        "/api/instruction-datasets/import/",
        {"name": "probe", "file": SimpleUploadedFile(filename, content)},
    )
    assert api.status_code == 400
    assert f"{filename}, {problem}" in _errors(api)
    assert not InstructionDataset.objects.exists()


def test_answers_with_a_nul_are_refused_by_line(admin_user):
    questions = b'{"question_id": 1, "question": "q1"}\n{"question_id": 2, "question": "q2"}\n'
    prompt_set = prompt_set_import(name="probe-set", data=questions, filename="q.jsonl")
    lines = [
        {"question_id": 1, "model_id": "m", "choices": [{"turns": ["fine"]}]},
        {"question_id": 2, "model_id": "m", "choices": [{"turns": ["bad\u0000"]}]},
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = logged_in(admin_user).post(
        "/admin/generation/generationrun/import/",
        {"prompt_set": prompt_set.pk, "file": SimpleUploadedFile("answers.jsonl", content)},
    )
    assert response.status_code == 200
    assert "answers.jsonl, line 2: " + jsonguard.NUL_CHARACTER in _text(response)
    assert not GenerationRun.objects.exists() and not LanguageModel.objects.filter(name="m")


def test_a_nul_in_an_api_body_is_named_by_the_json_guard(staff_user):
    body = '{"name": "bad\\u0000", "name_or_path": "x", "prompt_format": "plain"}'
    response = logged_in(staff_user).post("/api/models/", body, content_type="application/json")
    assert response.status_code == 400
    assert "NUL character" in response.json()["detail"]
    assert not LanguageModel.objects.exists()


# --- a preference data set's name ----------------------------------------------------------------


@pytest.fixture
def voted_study():
    study = two_model_study(questions=2, voters=1)
    vote_all(study, annotators(1), lambda person, pos: "a")
    return study


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "rtl\u202eoverride"])
def test_a_preference_data_set_name_with_a_control_character_is_refused(
    admin_user, voted_study, name
):
    response = logged_in(admin_user).post(
        "/admin/annotation/study/",
        {
            "action": "export_preferences",
            ACTION_CHECKBOX_NAME: [voted_study.pk],
            "apply": "1",
            "name": name,
        },
        follow=True,
    )
    assert "cannot hold control characters" in response.content.decode()
    with pytest.raises(CommandError, match="cannot hold control characters"):
        call_command("export_preferences", voted_study.name, "--name", name)
    assert not PreferenceDataset.objects.exists()
    # A plain name still exports.
    call_command("export_preferences", voted_study.name, "--name", "plain name")
    assert PreferenceDataset.objects.get().name == "plain name"


# --- a sweep's cells ------------------------------------------------------------------------------


@pytest.fixture
def questions():
    return prompt_set_create(
        name="probe-questions", questions=[ParsedQuestion(line=1, text="朝の散歩のこつは？")]
    )


def _sweep_body(base, dataset, questions, *, rows, learning_rates, name="capped") -> dict:
    return {
        "name": name,
        "base_model": base.pk,
        "mixes": [[dataset.pk]],
        "rows": rows,
        "learning_rates": learning_rates,
        "params": TINY_SWEEP,
        "prompt_set": questions.pk,
        "judge": idle_judge().pk,
    }


def _nothing_queued() -> bool:
    return not (
        Sweep.objects.exists() or FineTuneRun.objects.exists() or GenerationRun.objects.exists()
    )


def test_a_sweep_over_the_cell_limit_is_refused_and_one_at_it_starts(
    admin_user, base, fixture_dataset, questions, settings
):
    settings.SWEEP_MAX_CELLS = 4
    client = logged_in(admin_user)
    over = _sweep_body(
        base, fixture_dataset, questions, rows=[4, 8], learning_rates=[1e-3, 2e-3, 3e-3]
    )
    response = client.post("/api/sweeps/", over, content_type="application/json")
    assert response.status_code == 400
    assert "makes 6 cells" in response.json()["detail"]
    assert "limit of 4 fine-tune runs" in response.json()["detail"]
    assert _nothing_queued()
    with pytest.raises(CommandError, match="makes 6 cells .* limit of 4"):
        call_command(
            "sweep",
            f"--base={base.name}",
            f"--dataset={fixture_dataset.name}",
            "--rows=4,8,all",
            "--lr=1e-3,2e-3",
            f"--prompt-set={questions.name}",
            f"--judge={idle_judge().name}",
        )
    assert _nothing_queued()

    at = _sweep_body(base, fixture_dataset, questions, rows=[4, 8], learning_rates=[1e-3, 2e-3])
    response = client.post("/api/sweeps/", at, content_type="application/json")
    assert response.status_code == 201, response.content
    assert Sweep.objects.get().cells.count() == 4 == FineTuneRun.objects.count()


def test_a_grid_over_the_default_limit_is_refused_before_any_cell_is_made(
    admin_user, base, fixture_dataset, questions
):
    limit = django_settings.SWEEP_MAX_CELLS
    rows = list(range(1, limit + 1))  # twice the limit with both methods
    body = _sweep_body(base, fixture_dataset, questions, rows=rows, learning_rates=[1e-3])
    body["methods"] = ["lora", "full"]
    response = logged_in(admin_user).post("/api/sweeps/", body, content_type="application/json")
    assert response.status_code == 400
    assert (
        sweeps.TOO_MANY_CELLS.format(
            count=2 * limit,
            axes=f"mixes 1 x rows {limit} x learning rates 1 x epochs 1 x methods 2",
            limit=limit,
        )
        == response.json()["detail"]
    )
    assert _nothing_queued()


# --- a benchmark run's decoding -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_gen_toks": 1e9}, "max_gen_toks must be a whole number from 1 to 8192"),
        ({"max_gen_toks": 1.5}, "max_gen_toks must be"),
        ({"temperature": "hot"}, "temperature must be from 0 to 2"),
        ({"temperature": 2.5}, "temperature must be from 0 to 2"),
        ({"top_p": 1.5}, "top_p must be from 0 to 1"),
        ({"do_sample": "yes"}, "do_sample must be true or false"),
        ({"until": "\n"}, "until must be a list of non-empty strings"),
        ({"until": [1]}, "until must be a list of non-empty strings"),
        ({"beams": 4}, "params takes only max_gen_toks"),
    ],
)
def test_benchmark_decoding_is_typed_and_bounded_at_creation(
    django_user_model, base, params, message
):
    client = logged_in(bench_staff(django_user_model))
    body = {
        "model": base.pk,
        "tasks": ["ja_fixture_gen"],
        "scoring": "generative",
        "params": params,
    }
    response = client.post("/api/benchmark-runs/", body, content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not BenchmarkRun.objects.exists()


def test_benchmark_decoding_in_range_is_kept(django_user_model, base):
    client = logged_in(bench_staff(django_user_model))
    params = {
        "max_gen_toks": 64.0,
        "temperature": 0.7,
        "top_p": 0.9,
        "do_sample": True,
        "until": ["\n\n"],
    }
    body = {
        "model": base.pk,
        "tasks": ["ja_fixture_gen"],
        "scoring": "generative",
        "params": params,
    }
    response = client.post("/api/benchmark-runs/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert BenchmarkRun.objects.get().params == {**params, "max_gen_toks": 64}


def test_the_preference_name_check_is_the_services(voted_study):
    with pytest.raises(ServiceError, match=r"character 4 is '\\n'"):
        preferences.preferences_export(study=voted_study, name="bad\nname")
