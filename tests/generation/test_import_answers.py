"""Answers generated elsewhere, in FastChat's model_answer shape, imported as imported runs."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from generation import answers_import, importers
from generation.models import Answer, GenerationRun, LanguageModel, PromptSet
from generation.registry import language_model_register
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db


QUESTIONS = [
    {
        "question_id": 81,
        "category": "writing",
        "turns": ["旅行記を書いてください。", "Aで始めて。"],
    },
    {"question_id": 82, "category": "math", "turns": ["1+1は？"]},
    {"question_id": "q3", "category": "advice", "turns": ["よく眠るには？", "短く。"]},
]


def _jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _answer(qid, model_id, *turns, **extra) -> dict:
    return {
        "question_id": qid,
        "answer_id": f"a-{qid}-{model_id}",
        "model_id": model_id,
        "choices": [{"index": 0, "turns": list(turns)}],
        "tstamp": 1700000000.0,
        **extra,
    }


GOOD = [
    _answer(81, "gpt-4", "旅行記です。", "Aloha から始まる旅行記。"),
    _answer(82, "gpt-4", "2です。"),
    _answer("q3", "gpt-4", " 早く寝ます。 ", "早寝。"),
]


@pytest.fixture
def mt_set(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(_jsonl(QUESTIONS), encoding="utf-8")
    call_command("import_prompts", str(path), "--name", "mt")
    return PromptSet.objects.get(name="mt")


def _write(tmp_path, records, name="answers.jsonl"):
    path = tmp_path / name
    path.write_text(records if isinstance(records, str) else _jsonl(records), encoding="utf-8")
    return path


def _snapshot():
    return (LanguageModel.objects.count(), GenerationRun.objects.count(), Answer.objects.count())


def test_it_imports_one_answer_per_turn_as_a_succeeded_imported_run(tmp_path, mt_set):
    path = _write(tmp_path, GOOD)
    call_command("import_answers", str(path), "--prompt-set", "mt")

    run = GenerationRun.objects.get()
    assert run.imported and run.status == GenerationRun.Status.SUCCEEDED
    assert run.prompt_set == mt_set
    assert (run.done, run.total) == (5, 5)
    # The model came from model_id and is registered as an imported one: nothing to load.
    assert run.model.name == "gpt-4"
    assert run.model.name_or_path == "" and not run.model.is_endpoint
    stored = [
        (a.question.external_id, a.turn, a.text)
        for a in Answer.objects.filter(run=run).select_related("question")
    ]
    assert stored == [
        ("81", 1, "旅行記です。"),
        ("81", 2, "Aloha から始まる旅行記。"),
        ("82", 1, "2です。"),
        ("q3", 1, "早く寝ます。"),
        ("q3", 2, "早寝。"),
    ]


def test_answers_may_cover_part_of_the_set_and_come_in_any_order(tmp_path, mt_set):
    path = _write(tmp_path, [GOOD[2], GOOD[1]])
    call_command("import_answers", str(path), "--prompt-set", "mt")
    run = GenerationRun.objects.get()
    assert (run.done, run.total) == (3, 3)
    assert sorted(run.answers.values_list("question__external_id", flat=True)) == [
        "82",
        "q3",
        "q3",
    ]


def test_a_file_of_several_models_makes_one_run_each(tmp_path, mt_set):
    other = [_answer(a["question_id"], "calm2-7b-chat", *a["choices"][0]["turns"]) for a in GOOD]
    path = _write(tmp_path, [*GOOD, *other])
    call_command("import_answers", str(path), "--prompt-set", "mt")
    runs = GenerationRun.objects.order_by("pk")
    assert [r.model.name for r in runs] == ["gpt-4", "calm2-7b-chat"]
    assert [r.answers.count() for r in runs] == [5, 5]


def test_the_named_model_takes_the_answers_and_an_existing_model_is_reused(tmp_path, mt_set):
    model = language_model_register(name="my-sft", name_or_path="tiny-0", maker="Acme")
    records = [{k: v for k, v in a.items() if k != "model_id"} for a in GOOD]
    path = _write(tmp_path, records)
    call_command("import_answers", str(path), "--prompt-set", "mt", "--model", "my-sft")
    run = GenerationRun.objects.get()
    assert run.model == model
    assert LanguageModel.objects.count() == 1
    model.refresh_from_db()
    assert model.name_or_path == "tiny-0"  # the registered model is left as it was


def test_the_named_model_takes_a_file_of_one_model_id(tmp_path, mt_set):
    path = _write(tmp_path, GOOD)
    call_command("import_answers", str(path), "--prompt-set", "mt", "--model", "gpt-4-0613")
    assert GenerationRun.objects.get().model.name == "gpt-4-0613"


def test_the_command_reports_what_it_made(tmp_path, mt_set, capsys):
    path = _write(tmp_path, GOOD)
    call_command("import_answers", str(path), "--prompt-set", "mt")
    out = capsys.readouterr().out
    run = GenerationRun.objects.get()
    assert f"imported 5 answers to 3 questions of 'mt' as run {run.pk} of model 'gpt-4'" in out


def _bad(records_before, bad, records_after=()):
    return [*records_before, bad, *records_after]


BAD_CASES = [
    ("not JSON", _jsonl(GOOD[:1]) + '{"question_id": 82,\n', 2, "not valid JSON ("),
    ("not an object", _jsonl(GOOD[:1]) + "[1, 2]\n", 2, "expected a JSON object, got list"),
    (
        "no question_id",
        _bad(GOOD[:2], {"model_id": "gpt-4", "choices": [{"turns": ["x"]}]}),
        3,
        importers.NO_QUESTION_ID,
    ),
    (
        "question_id of a bad kind",
        _bad(GOOD[:1], {**GOOD[1], "question_id": [82]}),
        2,
        importers.BAD_QUESTION_ID.format(kind="list"),
    ),
    (
        "unknown question",
        _bad(GOOD[:1], _answer(999, "gpt-4", "x")),
        2,
        answers_import.UNKNOWN_QUESTION.format(qid="999", name="mt"),
    ),
    (
        "too few turns",
        _bad(GOOD[:2], _answer("q3", "gpt-4", "only one")),
        3,
        answers_import.TURN_COUNT.format(qid="q3", expected=2, name="mt", got=1),
    ),
    (
        "too many turns",
        _bad([], _answer(82, "gpt-4", "a", "b")),
        1,
        answers_import.TURN_COUNT.format(qid="82", expected=1, name="mt", got=2),
    ),
    (
        "no choices",
        _bad(GOOD[:1], {"question_id": 82, "model_id": "gpt-4", "choices": []}),
        2,
        importers.NO_CHOICES,
    ),
    (
        "turns not strings",
        _bad(GOOD[:1], {"question_id": 82, "model_id": "gpt-4", "choices": [{"turns": [1]}]}),
        2,
        importers.CHOICE_TURNS,
    ),
    (
        "the old text shape",
        _bad(GOOD[:1], {"question_id": 82, "model_id": "gpt-4", "text": "2です。"}),
        2,
        importers.NO_CHOICES,
    ),
    (
        "a second answer to a question",
        _bad(GOOD, _answer(82, "gpt-4", "3です。")),
        4,
        importers.DUPLICATE_ANSWER.format(model="gpt-4", qid="82", first=2),
    ),
    (
        "no model_id",
        _bad(GOOD[:1], {k: v for k, v in GOOD[1].items() if k != "model_id"}),
        2,
        answers_import.NO_MODEL,
    ),
    (
        "model_id not a string",
        _bad(GOOD[:1], {**GOOD[1], "model_id": 7}),
        2,
        importers.BAD_MODEL_ID.format(limit=importers.MODEL_ID_LIMIT),
    ),
]


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_a_bad_file_names_file_and_line_and_changes_nothing(
    tmp_path, mt_set, content, line, problem
):
    call_command("import_answers", str(_write(tmp_path, GOOD, "first.jsonl")), "--prompt-set", "mt")
    before = _snapshot()
    path = _write(tmp_path, content)
    with pytest.raises(CommandError) as caught:
        call_command("import_answers", str(path), "--prompt-set", "mt")
    message = str(caught.value)
    assert message.startswith(f"{path}, line {line}: ")
    assert problem in message
    assert _snapshot() == before


def test_a_file_of_two_models_is_refused_when_one_model_is_named(tmp_path, mt_set):
    path = _write(tmp_path, [GOOD[0], _answer(82, "calm2", "2")])
    with pytest.raises(CommandError) as caught:
        call_command("import_answers", str(path), "--prompt-set", "mt", "--model", "mine")
    assert str(caught.value).startswith(f"{path}, line 2: ")
    assert answers_import.TWO_MODELS.format(got="calm2", first="gpt-4", first_line=1) in str(
        caught.value
    )
    assert _snapshot() == (0, 0, 0)


def test_a_bad_answer_after_a_good_model_s_answers_leaves_no_model_behind(tmp_path, mt_set):
    # The first model's answers are all fine; the second model's last one is not.
    other = [_answer(81, "calm2", "a", "b"), _answer(82, "calm2", "x", "y")]
    path = _write(tmp_path, [*GOOD, *other])
    with pytest.raises(CommandError, match=f"{path}, line 5: "):
        call_command("import_answers", str(path), "--prompt-set", "mt")
    assert _snapshot() == (0, 0, 0)


def test_an_unknown_prompt_set_is_refused(tmp_path, mt_set):
    path = _write(tmp_path, GOOD)
    with pytest.raises(
        CommandError, match=re.escape(answers_import.NO_PROMPT_SET.format(name="nope"))
    ):
        call_command("import_answers", str(path), "--prompt-set", "nope")
    assert _snapshot() == (0, 0, 0)


def test_a_prompt_set_without_question_ids_is_refused(tmp_path):
    questions = tmp_path / "q.csv"
    questions.write_text("question\n日本の首都は？\n", encoding="utf-8")
    call_command("import_prompts", str(questions), "--name", "no-ids")
    path = _write(tmp_path, GOOD[1:2])
    with pytest.raises(CommandError) as caught:
        call_command("import_answers", str(path), "--prompt-set", "no-ids")
    assert answers_import.NO_EXTERNAL_IDS.format(name="no-ids") in str(caught.value)
    assert _snapshot() == (0, 0, 0)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("answers.csv", "question_id,text\n1,x\n", "unknown extension '.csv'"),
        ("empty.jsonl", "\n\n", importers.NO_ANSWERS),
        ("sjis.jsonl", "回答".encode("shift_jis"), "is not UTF-8 text"),
    ],
)
def test_a_file_that_is_no_answer_file_is_refused(tmp_path, mt_set, name, content, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=problem):
        call_command("import_answers", str(path), "--prompt-set", "mt")
    assert _snapshot() == (0, 0, 0)


def test_an_oversized_file_is_refused_by_its_size(tmp_path, mt_set, settings):
    path = _write(tmp_path, GOOD)
    settings.MAX_UPLOAD_BYTES = 100
    with pytest.raises(CommandError, match="over the 100-byte limit"):
        call_command("import_answers", str(path), "--prompt-set", "mt")
    assert _snapshot() == (0, 0, 0)


def test_staff_import_answers_through_the_api(tmp_path, mt_set, staff_user):
    client = logged_in(staff_user)
    upload = SimpleUploadedFile("gpt4.jsonl", _jsonl(GOOD).encode())
    response = client.post("/api/runs/import/", {"prompt_set": mt_set.pk, "file": upload})
    assert response.status_code == 201, response.content
    (body,) = response.json()
    run = GenerationRun.objects.get()
    assert (body["id"], body["imported"], body["total"]) == (run.pk, True, 5)
    bad = SimpleUploadedFile("bad.jsonl", _jsonl([_answer(999, "x", "y")]).encode())
    refused = client.post("/api/runs/import/", {"prompt_set": mt_set.pk, "file": bad})
    assert refused.status_code == 400
    problem = answers_import.UNKNOWN_QUESTION.format(qid="999", name="mt")
    assert refused.json() == {"file": [f"bad.jsonl, line 1: {problem}"]}
    assert _snapshot() == (1, 1, 5)


def test_an_admin_imports_answers_from_the_upload_page(tmp_path, mt_set, admin_user):
    client = logged_in(admin_user)
    listing = client.get("/admin/generation/generationrun/").content.decode()
    assert "/admin/generation/generationrun/import/" in listing
    upload = SimpleUploadedFile("mine.jsonl", _jsonl(GOOD).encode())
    response = client.post(
        "/admin/generation/generationrun/import/",
        {"prompt_set": mt_set.pk, "name": "my-sft", "file": upload},
        follow=True,
    )
    run = GenerationRun.objects.get()
    assert run.model.name == "my-sft" and run.answers.count() == 5
    assert f"Imported run {run.pk} (my-sft: 5 answers)." in response.content.decode()
    bad = SimpleUploadedFile("bad.jsonl", b'{"question_id": 81}\n')
    page = client.post(
        "/admin/generation/generationrun/import/", {"prompt_set": mt_set.pk, "file": bad}
    ).content.decode()
    assert f"bad.jsonl, line 1: {importers.NO_CHOICES}" in page.replace("&#x27;", "'")
    assert _snapshot() == (1, 1, 5)
