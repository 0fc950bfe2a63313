"""Prompt-set import: the formats of DESIGN.md, atomic on error, errors naming the line."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from generation import importers
from generation.models import PromptSet, Question
from generation.registry import language_model_register
from generation.runs import generation_run_create_imported
from tests.conftest import FIXTURES, logged_in

pytestmark = pytest.mark.django_db


def _write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _snapshot():
    return (PromptSet.objects.count(), Question.objects.count())


def test_it_imports_the_fixture_set_of_100_questions_with_categories():
    call_command("import_prompts", str(FIXTURES / "prompts_ja.jsonl"), "--name", "fixture")
    prompt_set = PromptSet.objects.get(name="fixture")
    questions = list(prompt_set.questions.order_by("position"))
    assert len(questions) == 100
    assert [q.position for q in questions] == list(range(1, 101))
    categories = {q.category for q in questions}
    assert categories == {
        "writing",
        "proofreading",
        "extraction",
        "knowledge",
        "reasoning",
        "math",
        "coding",
        "advice",
        "summarization",
        "roleplay",
    }
    assert questions[0].external_id == "q001"


def test_it_imports_csv_with_optional_columns(tmp_path):
    path = _write(
        tmp_path,
        "set.csv",
        'question,category,question_id\n"一行目\n二行目",writing,a1\n日本の首都は？,knowledge,a2\n',
    )
    call_command("import_prompts", str(path), "--name", "csv")
    questions = list(Question.objects.filter(prompt_set__name="csv").order_by("position"))
    assert [q.text for q in questions] == ["一行目\n二行目", "日本の首都は？"]
    assert [q.category for q in questions] == ["writing", "knowledge"]
    assert [q.external_id for q in questions] == ["a1", "a2"]


def test_it_imports_elyza_tasks_100(external_data):
    path = external_data / "elyza-tasks-100/data/test/elyza100_jp.jsonl"
    call_command("import_prompts", str(path), "--name", "elyza")
    questions = Question.objects.filter(prompt_set__name="elyza").order_by("position")
    assert questions.count() == 100
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert questions[0].text == first["input"].strip()


def test_elyza_tasks_100_keeps_each_reference_answer_and_its_criteria(external_data):
    """The parsed questions carry ELYZA's ``output`` as the reference answer and ``eval_aspect``
    as the grading criteria, for every one of the 100 tasks."""
    path = external_data / "elyza-tasks-100/data/test/elyza100_jp.jsonl"
    parsed = importers.parse_prompt_file(path.read_bytes(), path.name)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(parsed) == len(records) == 100
    for question, record in zip(parsed, records, strict=True):
        assert question.text == record["input"].strip()
        assert question.reference == record["output"].strip()
        assert question.criteria == record["eval_aspect"].strip()
    assert all(q.reference and q.criteria for q in parsed)
    assert parsed[0].criteria.startswith("- 熱意を取り戻すのではなく")


def test_reference_and_criteria_come_from_their_own_columns_and_keys_too():
    csv_data = "question,reference,criteria\n一たす一は？,2,数字が正しいこと\n"
    (from_csv,) = importers.parse_prompt_file(csv_data.encode(), "set.csv")
    assert (from_csv.reference, from_csv.criteria) == ("2", "数字が正しいこと")
    line = json.dumps({"question": "首都は？", "reference": "東京", "criteria": None})
    (from_jsonl,) = importers.parse_prompt_file(line.encode(), "set.jsonl")
    assert (from_jsonl.reference, from_jsonl.criteria) == ("東京", "")
    (plain,) = importers.parse_prompt_file(b'{"text": "x"}', "set.jsonl")
    assert (plain.reference, plain.criteria) == ("", "")


def test_it_imports_rakuda_questions_keeping_fastchat_ids(external_data):
    path = external_data / "rakuda/head_fae1ee7/jrank/data/rakuda_v2/questions.jsonl"
    call_command("import_prompts", str(path), "--name", "rakuda")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    questions = list(Question.objects.filter(prompt_set__name="rakuda").order_by("position"))
    assert len(questions) == len(records) == 40
    assert [q.external_id for q in questions] == [r["question_id"] for r in records]
    assert [q.text for q in questions] == [r["turns"][0].strip() for r in records]
    assert questions[0].category == records[0]["category"]


def test_it_imports_fastchat_questions_of_several_turns(tmp_path):
    records = [
        {"question_id": 81, "category": "writing", "turns": ["旅行記を書いて。", "Aで始めて。"]},
        {"question_id": 82, "category": "math", "turns": ["1+1は？"]},
    ]
    path = _write(
        tmp_path, "mt.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    )
    call_command("import_prompts", str(path), "--name", "mt")
    first, second = Question.objects.filter(prompt_set__name="mt").order_by("position")
    assert (first.text, first.follow_ups, first.external_id) == (
        "旅行記を書いて。",
        ["Aで始めて。"],
        "81",
    )
    assert first.turns == ["旅行記を書いて。", "Aで始めて。"]
    assert (second.text, second.follow_ups, second.turns) == ("1+1は？", [], ["1+1は？"])


@pytest.mark.parametrize(
    ("name", "content", "line", "problem"),
    [
        ("bad.csv", "text\nhello\n", 1, "no 'question' column"),
        ("empty-q.csv", "question\nok\n   \n", 3, importers.EMPTY_QUESTION),
        ("bad.jsonl", '{"text": "ok"}\n{"text": "broken"\n', 2, "not valid JSON"),
        ("empty.jsonl", '{"text": "ok"}\n{"question": "  "}\n', 2, importers.EMPTY_QUESTION),
        ("nofield.jsonl", '{"prompt": "x"}\n', 1, importers.NO_TEXT_FIELD),
        ("array.jsonl", '["x"]\n', 1, "expected a JSON object"),
        (
            "empty-turn.jsonl",
            '{"question_id": 1, "turns": ["a"]}\n{"question_id": 2, "turns": ["a", " "]}\n',
            2,
            importers.EMPTY_TURN.format(n=2),
        ),
        ("no-turns.jsonl", '{"question_id": 1, "turns": []}\n', 1, importers.TURNS_NOT_LIST),
        (
            "dup.jsonl",
            '{"question_id": 7, "text": "a"}\n{"question_id": 7, "text": "b"}\n',
            2,
            "already appeared on line 1",
        ),
        (
            "ref.jsonl",
            '{"input": "a", "output": "b"}\n{"input": "c", "eval_aspect": ["d"]}\n',
            2,
            "field 'eval_aspect' must be a string, got list",
        ),
    ],
)
def test_a_bad_file_names_the_line_and_imports_nothing(tmp_path, name, content, line, problem):
    call_command("import_prompts", str(FIXTURES / "prompts_ja.jsonl"), "--name", "existing")
    before = _snapshot()
    path = _write(tmp_path, name, content)
    with pytest.raises(CommandError) as caught:
        call_command("import_prompts", str(path), "--name", "new-set")
    message = str(caught.value)
    assert f"{path}, line {line}: " in message
    assert problem in message
    assert _snapshot() == before


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = _write(tmp_path, "sjis.csv", "question\n日本語の質問\n".encode("shift_jis"))
    with pytest.raises(CommandError, match="is not UTF-8 text"):
        call_command("import_prompts", str(path), "--name", "sjis")
    assert not PromptSet.objects.filter(name="sjis").exists()


def test_an_empty_file_is_refused(tmp_path):
    path = _write(tmp_path, "empty.jsonl", "\n\n")
    with pytest.raises(CommandError, match=importers.EMPTY_FILE):
        call_command("import_prompts", str(path), "--name", "empty")


def test_an_existing_name_is_refused_unless_replace(tmp_path):
    first = _write(tmp_path, "a.csv", "question\none\ntwo\n")
    second = _write(tmp_path, "b.csv", "question\nthree\n")
    call_command("import_prompts", str(first), "--name", "set")
    with pytest.raises(CommandError, match="already exists"):
        call_command("import_prompts", str(second), "--name", "set")
    assert Question.objects.filter(prompt_set__name="set").count() == 2
    call_command("import_prompts", str(second), "--name", "set", "--replace")
    assert list(Question.objects.filter(prompt_set__name="set").values_list("text", flat=True)) == [
        "three"
    ]


def test_a_set_with_answers_is_never_changed_in_place(tmp_path):
    first = _write(tmp_path, "a.csv", "question\none\n")
    call_command("import_prompts", str(first), "--name", "answered")
    prompt_set = PromptSet.objects.get(name="answered")
    model = language_model_register(name="m", name_or_path="x")
    question = prompt_set.questions.get()
    generation_run_create_imported(
        model=model, prompt_set=prompt_set, answers={question.pk: "answer"}
    )
    second = _write(tmp_path, "b.csv", "question\nchanged\n")
    with pytest.raises(CommandError, match="read-only"):
        call_command("import_prompts", str(second), "--name", "answered", "--replace")
    assert prompt_set.questions.get().text == "one"


def test_an_oversized_file_is_refused(tmp_path, settings):
    settings.MAX_UPLOAD_BYTES = 100
    path = _write(tmp_path, "big.csv", "question\n" + "あ" * 200 + "\n")
    with pytest.raises(CommandError, match="over the 100-byte limit"):
        call_command("import_prompts", str(path), "--name", "big")
    assert not PromptSet.objects.filter(name="big").exists()


def test_the_api_takes_questions_of_several_turns_and_serves_their_follow_ups(staff_user):
    records = [{"question_id": 1, "turns": ["一つ目", "二つ目", "三つ目"]}]
    upload = SimpleUploadedFile(
        "mt.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    )
    client = logged_in(staff_user)
    response = client.post("/api/prompt-sets/import/", {"name": "mt-api", "file": upload})
    assert response.status_code == 201, response.content
    prompt_set = response.json()["id"]
    (question,) = client.get(f"/api/questions/?prompt_set={prompt_set}").json()["results"]
    assert (question["text"], question["follow_ups"]) == ("一つ目", ["二つ目", "三つ目"])


def test_importing_elyza_tasks_100_stores_each_reference_and_criteria(external_data):
    path = external_data / "elyza-tasks-100/data/test/elyza100_jp.jsonl"
    call_command("import_prompts", str(path), "--name", "elyza-graded")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    stored = list(
        Question.objects.filter(prompt_set__name="elyza-graded")
        .order_by("position")
        .values_list("text", "reference", "criteria")
    )
    assert len(stored) == 100
    expected = [
        (r["input"].strip(), r["output"].strip(), r["eval_aspect"].strip()) for r in records
    ]
    assert stored == expected
