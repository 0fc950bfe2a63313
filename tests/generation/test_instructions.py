"""Instruction data sets: parsing, atomic imports whose errors name the line, statistics."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from evalsite.errors import ServiceError
from generation import instructions
from generation.importers import ImportFormatError
from generation.models import InstructionDataset, InstructionExample
from generation.registry import language_model_register, storage_relative
from generation.training.data import instruction_dataset_import
from tests.conftest import FIXTURES


def _jsonl(*records) -> bytes:
    return "".join(
        (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records
    ).encode()


GOOD = {"instruction": "日本の首都は？", "input": "", "output": "東京です。"}


# --- parsing (no database) ---------------------------------------------------------------------


def test_it_reads_the_alpaca_shape_with_and_without_input():
    data = _jsonl(
        {
            "instruction": "要約してください。",
            "input": "長い文章",
            "output": "短い文章",
            "index": 3,
        },
        {"instruction": "挨拶して", "output": "こんにちは"},
        {"instruction": "翻訳して", "input": None, "output": "Hello"},
    )
    examples = instructions.parse_instruction_file(data, "a.jsonl")
    assert [(e.line, e.instruction, e.input, e.output) for e in examples] == [
        (1, "要約してください。", "長い文章", "短い文章"),
        (2, "挨拶して", "", "こんにちは"),
        (3, "翻訳して", "", "Hello"),
    ]


def test_it_reads_single_turn_conversations():
    data = _jsonl(
        {
            "messages": [
                {"role": "user", "content": "質問"},
                {"role": "assistant", "content": "答え"},
            ]
        }
    )
    [example] = instructions.parse_instruction_file(data, "chat.jsonl")
    assert (example.instruction, example.input, example.output) == ("質問", "", "答え")


def test_it_reads_csv_and_json_arrays():
    csv_data = 'instruction,input,output\n質問1,,答え1\n"複数\n行",入力,答え2\n'.encode()
    examples = instructions.parse_instruction_file(csv_data, "d.csv")
    assert [(e.line, e.instruction, e.input) for e in examples] == [
        (2, "質問1", ""),
        (4, "複数\n行", "入力"),
    ]
    array = json.dumps([GOOD, GOOD], ensure_ascii=False).encode()
    assert len(instructions.parse_instruction_file(array, "alpaca_data.json")) == 2


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (
            _jsonl(GOOD, '{"instruction": "x", "output": '),
            "d.jsonl",
            "d.jsonl, line 2: not valid JSON",
        ),
        (_jsonl(GOOD, GOOD, {"instruction": "x"}), "d.jsonl", "d.jsonl, line 3: no 'output' field"),
        (
            _jsonl(GOOD, {"instruction": "  ", "output": "y"}),
            "d.jsonl",
            "d.jsonl, line 2: the instruction is empty",
        ),
        (
            _jsonl({"instruction": "x", "output": ""}),
            "d.jsonl",
            "d.jsonl, line 1: the output is empty",
        ),
        (
            b"instruction,output\nx,y\n,z\n",
            "d.csv",
            "d.csv, line 3: the instruction is empty",
        ),
        (b"instruction,answer\nx,y\n", "d.csv", "d.csv, line 1: has no 'output' column"),
        (
            _jsonl(
                GOOD,
                {
                    "messages": [{"role": "user", "content": "a"}] * 2
                    + [{"role": "assistant", "content": "b"}]
                },
            ),
            "d.jsonl",
            "d.jsonl, line 2: conversation with 3 messages",
        ),
        (
            _jsonl(
                {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}
            ),
            "d.jsonl",
            "d.jsonl, line 1: system messages are not supported",
        ),
        (_jsonl(GOOD, [1, 2]), "d.jsonl", "d.jsonl, line 2: expected a JSON object, got list"),
        (
            _jsonl({"instruction": 5, "output": "y"}),
            "d.jsonl",
            "field 'instruction' must be a string",
        ),
    ],
)
def test_a_bad_record_is_refused_with_its_line(data, filename, message):
    with pytest.raises(ImportFormatError) as caught:
        instructions.parse_instruction_file(data, filename)
    assert message in str(caught.value)


def test_text_that_is_not_utf8_is_refused_with_the_line_of_the_first_bad_byte():
    data = "instruction,output\nquestion,answer\n質問,答え\n".encode("shift_jis")
    with pytest.raises(ImportFormatError) as caught:
        instructions.parse_instruction_file(data, "d.csv")
    assert str(caught.value).startswith("d.csv, line 3: is not UTF-8 text (bad byte 0x")
    assert "save the file as UTF-8" in str(caught.value)


def test_a_file_over_the_size_limit_is_refused():
    with pytest.raises(ImportFormatError, match="over the 10-byte limit"):
        instructions.parse_instruction_file(_jsonl(GOOD), "d.jsonl", limit=10)


def test_statistics_count_unique_instructions_and_exact_duplicates():
    other_input = {**GOOD, "input": "補足"}
    other_output = {**GOOD, "output": "東京都です。"}
    examples = instructions.parse_instruction_file(
        _jsonl(GOOD, GOOD, other_input, other_output, GOOD), "d.jsonl"
    )
    stats = instructions.summary(examples)
    assert stats["rows"] == 5
    assert stats["unique_instructions"] == 2  # (instruction, input) pairs
    assert stats["duplicate_rows"] == 2
    kept, dropped = instructions.drop_duplicates(examples)
    assert dropped == 2 and [e.line for e in kept] == [1, 3, 4]


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert instructions.percentiles(values) == {
        "min": 1, "p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100, "mean": 50.5,
    }  # fmt: skip
    assert instructions.percentiles([]) == {}


# --- imports (database) ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_fixture_imports_with_its_statistics():
    dataset = instruction_dataset_import(
        name="fixture",
        data=(FIXTURES / "instructions_ja.jsonl").read_bytes(),
        filename="fixtures/instructions_ja.jsonl",
    )
    assert dataset.source == "instructions_ja.jsonl"
    assert dataset.examples.count() == dataset.stats["rows"] >= 240
    first = dataset.examples.order_by("position").first()
    assert first.position == 1 and first.instruction and first.output


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_jsonl(GOOD, GOOD, "{oops"), "line 3: not valid JSON"),
        (_jsonl(GOOD, {"instruction": "x", "input": "y"}), "line 2: no 'output' field"),
        (
            _jsonl(GOOD, GOOD, GOOD, {"instruction": "", "output": "z"}),
            "line 4: the instruction is empty",
        ),
        (
            _jsonl(GOOD, GOOD) + json.dumps(GOOD, ensure_ascii=False).encode("euc_jp"),
            "line 3: is not UTF-8",
        ),
    ],
)
def test_a_bad_file_imports_nothing(data, message):
    with pytest.raises(ImportFormatError, match=message):
        instruction_dataset_import(name="bad", data=data, filename="bad.jsonl")
    assert not InstructionDataset.objects.exists()
    assert not InstructionExample.objects.exists()


@pytest.mark.django_db
def test_duplicates_can_be_dropped_on_import():
    dataset = instruction_dataset_import(
        name="dedup", data=_jsonl(GOOD, GOOD, GOOD), filename="d.jsonl", drop_duplicates=True
    )
    assert dataset.examples.count() == 1
    assert dataset.stats["rows"] == 1
    assert dataset.stats["rows_in_file"] == 3
    assert dataset.stats["duplicate_rows"] == dataset.stats["dropped_duplicates"] == 2


@pytest.mark.django_db
def test_a_second_data_set_with_the_same_name_is_refused():
    instruction_dataset_import(name="x", data=_jsonl(GOOD), filename="d.jsonl")
    with pytest.raises(ServiceError, match="already exists"):
        instruction_dataset_import(name="x", data=_jsonl(GOOD), filename="d.jsonl")


@pytest.mark.django_db
def test_the_command_imports_and_reports(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_bytes(_jsonl(GOOD, GOOD, {**GOOD, "input": "補足"}))
    out = _call("import_instructions", str(path), "--name", "cmd", "--drop-duplicates")
    assert "imported 2 examples into data set 'cmd'" in out
    assert "1 exact-duplicate rows (1 dropped)" in out


@pytest.mark.django_db
def test_the_command_names_the_bad_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_bytes(_jsonl(GOOD, {"instruction": "x"}))
    with pytest.raises(CommandError, match=r"set\.jsonl, line 2: no 'output' field"):
        _call("import_instructions", str(path), "--name", "cmd")
    assert not InstructionDataset.objects.exists()


@pytest.mark.django_db
def test_token_statistics_use_the_chosen_models_tokenizer_and_format(tiny_model_dir):
    model = language_model_register(
        name="tiny", name_or_path=storage_relative(tiny_model_dir), prompt_format="rinna"
    )
    dataset = instruction_dataset_import(
        name="tok",
        data=(FIXTURES / "instructions_ja.jsonl").read_bytes(),
        filename="i.jsonl",
        tokenizer_model=model,
    )
    tokens = dataset.stats["tokens"]
    assert tokens["model"] == "tiny" and tokens["prompt_format"] == "rinna"
    assert tokens["template"] == "rinna v1"
    for part in ("prompt", "answer", "total"):
        assert 0 < tokens[part]["p50"] <= tokens[part]["p90"] <= tokens[part]["max"]
    assert tokens["total"]["max"] > tokens["answer"]["max"]


@pytest.mark.django_db
def test_token_statistics_with_a_served_model_are_refused_clearly():
    served = language_model_register(
        name="served", endpoint_url="http://127.0.0.1:9/v1", endpoint_model="tiny"
    )
    with pytest.raises(ServiceError) as error:
        instruction_dataset_import(
            name="tok",
            data=(FIXTURES / "instructions_ja.jsonl").read_bytes(),
            filename="i.jsonl",
            tokenizer_model=served,
        )
    assert str(error.value) == (
        "token statistics with 'served' failed: is served by an endpoint; choose a model whose "
        "tokenizer is stored here"
    )
    assert not InstructionDataset.objects.filter(name="tok").exists()


# --- admin and API -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_upload_imports_and_shows_the_statistics(client, admin_user):
    client.force_login(admin_user)
    upload = SimpleUploadedFile("up.jsonl", _jsonl(GOOD, GOOD, {**GOOD, "input": "<b>補足</b>"}))
    response = client.post(
        "/admin/generation/instructiondataset/import/",
        {"name": "uploaded", "file": upload, "description": ""},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    dataset = InstructionDataset.objects.get(name="uploaded")
    page = client.get(f"/admin/generation/instructiondataset/{dataset.pk}/change/").content.decode()
    assert "exact-duplicate rows" in page and "unique instructions" in page
    assert "&lt;b&gt;補足&lt;/b&gt;" in page and "<b>補足</b>" not in page


@pytest.mark.django_db
def test_admin_upload_shows_the_error_and_imports_nothing(client, admin_user):
    client.force_login(admin_user)
    upload = SimpleUploadedFile("up.jsonl", _jsonl(GOOD, {"instruction": "x"}))
    response = client.post(
        "/admin/generation/instructiondataset/import/", {"name": "bad", "file": upload}
    )
    assert response.status_code == 200
    assert "up.jsonl, line 2: no &#x27;output&#x27; field" in response.content.decode()
    assert not InstructionDataset.objects.exists()


@pytest.mark.django_db
def test_the_api_imports_for_staff_only(client, staff_user, annotator):
    upload = SimpleUploadedFile("api.jsonl", _jsonl(GOOD))
    client.force_login(annotator)
    refused = client.post("/api/instruction-datasets/import/", {"name": "a", "file": upload})
    assert refused.status_code == 403
    client.force_login(staff_user)
    upload = SimpleUploadedFile("api.jsonl", _jsonl(GOOD))
    response = client.post("/api/instruction-datasets/import/", {"name": "a", "file": upload})
    assert response.status_code == 201, response.content
    assert response.json()["stats"]["rows"] == 1
    bad = SimpleUploadedFile("api.jsonl", _jsonl(GOOD, "nope"))
    response = client.post("/api/instruction-datasets/import/", {"name": "b", "file": bad})
    assert response.status_code == 400
    assert "api.jsonl, line 2: not valid JSON" in response.json()["file"][0]


def _call(*args) -> str:
    import io

    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_an_upload_over_max_upload_bytes_is_refused(settings):
    settings.MAX_UPLOAD_BYTES = 100
    data = _jsonl(*[GOOD] * 10)
    with pytest.raises(ImportFormatError, match=f"is {len(data)} bytes, over the 100-byte limit"):
        instruction_dataset_import(name="big", data=data, filename="big.jsonl")
    assert not InstructionDataset.objects.exists()
