"""Security issue 24, finding 3 and part of 7: model code in the web process, and what the
audit log missed.

Finding 3: token statistics loaded the chosen model's tokenizer inside the request, with the
model's ``trust_remote_code``, for a staff user who could only *view* data sets. These tests
plant a model folder under MODEL_STORAGE whose repository code writes a marker file when it is
imported, and drive the real API, admin and import: the marker never appears, a remote-code
model is refused with a message, and only a user who may change the data set gets statistics.

Finding 7 (parts): switching ``trust_remote_code``, endpoint changes, judge and rewrite prompt
edits and answer imports leave audit entries; a staff user (not a superuser) may not change the
prompt template of a remote-code model.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from evalsite.accounts.models import AuditEntry
from generation.models import GenerationRun, InstructionDataset, LanguageModel, PromptSet
from generation.registry import (
    API_KEY_SUPERUSER,
    REMOTE_CODE_CHANGE,
    language_model_register,
    storage_relative,
)
from generation.training.data import NO_TOKENIZER_STATS
from generation.web_tokenizer import REMOTE_CODE_IN_WEB
from tests.conftest import FIXTURES, logged_in

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action
DATASETS = "/api/instruction-datasets/"
DATASETS_ADMIN = "/admin/generation/instructiondataset/"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def planted(model_storage, tmp_path):
    """A model folder inside MODEL_STORAGE whose code writes ``marker`` when imported."""
    folder = model_storage / "uploads" / f"planted-{tmp_path.name}"
    folder.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "planted-code-ran"
    module = f"planted_{tmp_path.name.replace('-', '_')}"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (folder / f"{module}.py").write_text(code)
    auto_map = {
        "AutoConfig": f"{module}.PlantedConfig",
        "AutoModelForCausalLM": f"{module}.PlantedModel",
        "AutoTokenizer": [f"{module}.PlantedTokenizer", None],
    }
    (folder / "config.json").write_text(
        json.dumps({"model_type": "planted_model", "auto_map": auto_map})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PlantedTokenizer", "auto_map": auto_map})
    )
    return storage_relative(folder), marker


@pytest.fixture
def dataset():
    from generation.training.data import instruction_dataset_import

    return instruction_dataset_import(
        name="instructions-ja",
        data=(FIXTURES / "instructions_ja.jsonl").read_bytes(),
        filename="instructions_ja.jsonl",
    )


def _staff(django_user_model, username: str, *codenames: str):
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="generation", codename__in=codenames)
    )
    return user


@pytest.fixture
def viewer(django_user_model):
    """Staff who may look at data sets and models, and change nothing."""
    return _staff(django_user_model, "viewer", "view_instructiondataset", "view_languagemodel")


@pytest.fixture
def changer(django_user_model):
    """Staff who may change data sets (their statistics among them)."""
    return _staff(
        django_user_model,
        "changer",
        "view_instructiondataset",
        "change_instructiondataset",
        "view_languagemodel",
    )


def _remote(name: str, path: str, admin_user) -> LanguageModel:
    """A model a superuser registered with trust_remote_code on."""
    return language_model_register(
        name=name, name_or_path=path, trust_remote_code=True, user=admin_user
    )


def _token_stats(client, dataset, model):
    return client.post(
        f"{DATASETS}{dataset.pk}/token-stats/",
        {"model": model.pk},
        content_type="application/json",
    )


def _text(response) -> str:
    return response.content.decode().replace("&#x27;", "'")


# --- finding 3: token statistics --------------------------------------------------------------


def test_a_view_only_staff_user_may_not_compute_token_statistics(viewer, dataset, tiny_model_dir):
    model = language_model_register(name="tiny", name_or_path=storage_relative(tiny_model_dir))
    response = _token_stats(logged_in(viewer), dataset, model)
    assert response.status_code == 403
    dataset.refresh_from_db()
    assert "tokens" not in dataset.stats
    # Nor in the admin: the action is not offered, and posting it does nothing.
    client = logged_in(viewer)
    assert "token_statistics" not in _text(client.get(DATASETS_ADMIN))
    client.post(
        DATASETS_ADMIN,
        {
            "action": "token_statistics",
            ACTION_CHECKBOX_NAME: [dataset.pk],
            "apply": "1",
            "model": model.pk,
        },
    )
    dataset.refresh_from_db()
    assert "tokens" not in dataset.stats


def test_a_user_who_may_change_the_set_gets_statistics_of_a_normal_model(
    changer, dataset, tiny_model_dir
):
    model = language_model_register(
        name="tiny", name_or_path=storage_relative(tiny_model_dir), prompt_format="rinna"
    )
    response = _token_stats(logged_in(changer), dataset, model)
    assert response.status_code == 200, response.content
    tokens = response.json()["stats"]["tokens"]
    assert (tokens["model"], tokens["prompt_format"]) == ("tiny", "rinna")
    assert 0 < tokens["total"]["p50"] <= tokens["total"]["max"]
    dataset.refresh_from_db()
    assert dataset.stats["tokens"] == tokens
    # The admin action too.
    client = logged_in(changer)
    chosen = {"action": "token_statistics", ACTION_CHECKBOX_NAME: [dataset.pk]}
    page = client.post(DATASETS_ADMIN, {**chosen, "apply": "1", "model": model.pk}, follow=True)
    assert "Token statistics of instructions-ja updated." in _text(page)


def test_a_remote_code_model_is_refused_and_its_code_never_runs_in_the_web_process(
    admin_user, changer, staff_user, dataset, planted
):
    path, marker = planted
    model = _remote("remote", path, admin_user)
    expected = REMOTE_CODE_IN_WEB.format(name="remote")

    response = _token_stats(logged_in(changer), dataset, model)
    assert response.status_code == 400
    assert expected in _text(response)
    # A superuser asking changes nothing: the web process never runs it.
    response = _token_stats(logged_in(admin_user), dataset, model)
    assert response.status_code == 400 and expected in _text(response)
    dataset.refresh_from_db()
    assert "tokens" not in dataset.stats

    # The admin action says the same and writes nothing.
    page = logged_in(admin_user).post(
        DATASETS_ADMIN,
        {
            "action": "token_statistics",
            ACTION_CHECKBOX_NAME: [dataset.pk],
            "apply": "1",
            "model": model.pk,
        },
        follow=True,
    )
    assert expected in _text(page)
    dataset.refresh_from_db()
    assert "tokens" not in dataset.stats

    # An import that counts tokens with it is refused whole: no data set.
    upload = SimpleUploadedFile("i.jsonl", (FIXTURES / "instructions_ja.jsonl").read_bytes())
    response = logged_in(staff_user).post(
        f"{DATASETS}import/", {"name": "counted", "file": upload, "tokenizer_model": model.pk}
    )
    assert response.status_code == 400 and expected in _text(response)
    assert not InstructionDataset.objects.filter(name="counted").exists()

    assert not marker.exists(), "the planted repository code ran in the web process"


def test_a_folder_that_needs_its_own_code_fails_cleanly_when_the_flag_is_off(
    changer, dataset, planted
):
    """The flag off, the same planted folder: transformers is told no remote code, so it
    refuses to load the folder (a 400 naming the model), and nothing is imported."""
    path, marker = planted
    model = language_model_register(name="planted", name_or_path=path)
    response = _token_stats(logged_in(changer), dataset, model)
    assert response.status_code == 400
    prefix = NO_TOKENIZER_STATS.format(model="planted", problem="")
    assert prefix in _text(response)
    assert not marker.exists()


# --- finding 7: who changes the template of a remote-code model -------------------------------


def _patch(client, model: LanguageModel, **body):
    return client.patch(f"/api/models/{model.pk}/", body, content_type="application/json")


def test_staff_cannot_change_the_template_of_a_remote_code_model_and_a_superuser_can(
    admin_user, staff_user
):
    model = _remote("remote", "org/remote-model", admin_user)
    staff = logged_in(staff_user)
    response = _patch(staff, model, prompt_format="rinna")
    assert response.status_code == 400
    expected = REMOTE_CODE_CHANGE.format(name="remote", fields="prompt_format")
    assert expected in _text(response)
    model.refresh_from_db()
    assert (model.prompt_format, model.trust_remote_code) == ("line_sft", True)

    # The admin does not offer the field to staff on that model; on another model it does.
    page = _text(staff.get(f"/admin/generation/languagemodel/{model.pk}/change/"))
    assert 'name="prompt_format"' not in page
    plain = language_model_register(name="plain-model", name_or_path="org/plain")
    page = _text(staff.get(f"/admin/generation/languagemodel/{plain.pk}/change/"))
    assert 'name="prompt_format"' in page
    assert _patch(staff, plain, prompt_format="rinna").status_code == 200

    # A superuser may; the template does not change the code, so the flag stays on.
    response = _patch(logged_in(admin_user), model, prompt_format="rinna")
    assert response.status_code == 200, response.content
    model.refresh_from_db()
    assert (model.prompt_format, model.trust_remote_code) == ("rinna", True)


# --- finding 7: the audit log -------------------------------------------------------------------


def _entries(action: str, obj=None):
    entries = AuditEntry.objects.filter(action=action)
    if obj is not None:
        entries = entries.filter(object_id=str(obj.pk))
    return list(entries.order_by("created_at", "id"))


def test_switching_trust_remote_code_is_audited(admin_user, staff_user):
    admin, staff = logged_in(admin_user), logged_in(staff_user)
    response = admin.post(
        "/api/models/",
        {"name": "remote", "name_or_path": "org/remote-model", "trust_remote_code": True},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    model = LanguageModel.objects.get(name="remote")
    (on,) = _entries(Action.MODEL_REMOTE_CODE_ON, model)
    assert (on.user, on.actor, on.details["name_or_path"]) == (
        admin_user,
        "admin",
        "org/remote-model",
    )

    # Staff may turn it off (that is recorded); turning it on again is refused, unrecorded.
    assert _patch(staff, model, trust_remote_code=False).status_code == 200
    (off,) = _entries(Action.MODEL_REMOTE_CODE_OFF, model)
    assert off.user == staff_user
    assert _patch(staff, model, trust_remote_code=True).status_code == 400
    assert len(_entries(Action.MODEL_REMOTE_CODE_ON, model)) == 1

    assert _patch(admin, model, trust_remote_code=True).status_code == 200
    assert [e.user for e in _entries(Action.MODEL_REMOTE_CODE_ON, model)] == [admin_user] * 2

    # A superuser's new path without confirming the flag turns it off: recorded as well.
    assert _patch(admin, model, name_or_path="org/other").status_code == 200
    model.refresh_from_db()
    assert model.trust_remote_code is False
    assert len(_entries(Action.MODEL_REMOTE_CODE_OFF, model)) == 2

    # A change that leaves the flag alone is no such entry.
    assert _patch(staff, model, maker="Acme").status_code == 200
    assert len(_entries(Action.MODEL_REMOTE_CODE_OFF, model)) == 2


def test_the_admin_add_form_records_trust_remote_code_too(admin_user):
    response = logged_in(admin_user).post(
        "/admin/generation/languagemodel/add/",
        {
            "name": "added",
            "name_or_path": "org/added",
            "prompt_format": "line_sft",
            "generation_defaults": "{}",
            "trust_remote_code": "on",
            "aliases": "",
            "maker_aliases": "",
            "endpoint_concurrency": "4",
        },
    )
    assert response.status_code == 302, _text(response)[-3000:]
    model = LanguageModel.objects.get(name="added")
    assert model.trust_remote_code is True
    (entry,) = _entries(Action.MODEL_REMOTE_CODE_ON, model)
    assert entry.user == admin_user


def test_endpoint_changes_are_audited_by_field_without_a_key_or_a_password(
    admin_user, staff_user, monkeypatch, settings
):
    # The hosts this test names are allowed endpoints here (ENDPOINT_ALLOWED_HOSTS, finding 4).
    settings.ENDPOINT_ALLOWED_HOSTS = [".example.com", ".example.org"]
    monkeypatch.setenv("WEBMODEL_KEY", "sk-the-key-value-itself")
    admin, staff = logged_in(admin_user), logged_in(staff_user)
    response = admin.post(
        "/api/models/",
        {
            "name": "served",
            "endpoint_url": "https://alice:pw-in-the-url@api.example.com:8443/v1?token=q",
            "endpoint_model": "gpt-x",
            "api_key_env": "WEBMODEL_KEY",
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    model = LanguageModel.objects.get(name="served")
    (made,) = _entries(Action.MODEL_ENDPOINT_CHANGE, model)
    assert made.user == admin_user
    assert made.details["fields"] == ["endpoint_url", "endpoint_model", "api_key_env"]
    assert made.details["endpoint_url"] == {"from": "", "to": "https://api.example.com:8443"}
    assert made.details["api_key_env"] == {"from": "", "to": "WEBMODEL_KEY"}

    assert _patch(staff, model, endpoint_model="gpt-y").status_code == 200
    # Where the key goes is the superuser's: refused for staff, and so not recorded.
    refused = _patch(staff, model, endpoint_url="https://elsewhere.example.org/v1")
    assert refused.status_code == 400
    assert API_KEY_SUPERUSER.format(fields="endpoint_url") in _text(refused)
    assert (
        _patch(admin, model, endpoint_url="https://other.example.org/v1", api_key_env="OTHER_KEY")
    ).status_code == 200

    entries = _entries(Action.MODEL_ENDPOINT_CHANGE, model)
    assert [(e.actor, e.details["fields"]) for e in entries] == [
        ("admin", ["endpoint_url", "endpoint_model", "api_key_env"]),
        ("staff", ["endpoint_model"]),
        ("admin", ["endpoint_url", "api_key_env"]),
    ]
    assert entries[1].details["endpoint_model"] == {"from": "gpt-x", "to": "gpt-y"}
    assert entries[2].details["endpoint_url"] == {
        "from": "https://api.example.com:8443",
        "to": "https://other.example.org",
    }
    logged = json.dumps([e.details for e in entries])
    for secret in ("sk-the-key-value-itself", "pw-in-the-url", "alice", "token=q"):
        assert secret not in logged
    # A change of something else is no endpoint entry.
    assert _patch(staff, model, maker="Acme").status_code == 200
    assert len(_entries(Action.MODEL_ENDPOINT_CHANGE, model)) == 3


SHORT_JUDGE = {
    "name": "short_pairwise",
    "kind": "pairwise",
    "template": "質問: {{ question }}\nA: {{ answer_1 }}\nB: {{ answer_2 }}\n"
    "[[A]]、[[B]]、[[C]] で答える。",
    "verdict_format": "brackets_abc",
}


def test_judge_prompt_creation_and_edits_are_audited(admin_user):
    client = logged_in(admin_user)
    created = client.post("/api/judge-prompts/", SHORT_JUDGE, content_type="application/json")
    assert created.status_code == 201, created.content
    prompt_id = created.json()["id"]
    (made,) = AuditEntry.objects.filter(action=Action.JUDGE_PROMPT_CREATE)
    assert (made.user, made.object_id, made.details["name"]) == (
        admin_user,
        str(prompt_id),
        "short_pairwise",
    )
    template = SHORT_JUDGE["template"] + "\n理由も一行で。"
    edited = client.patch(
        f"/api/judge-prompts/{prompt_id}/", {"template": template}, content_type="application/json"
    )
    assert edited.status_code == 200, edited.content
    (edit,) = _entries(Action.JUDGE_PROMPT_EDIT)
    assert (edit.user, edit.details["fields"], edit.details["version"]) == (
        admin_user,
        ["template"],
        1,
    )
    # A refused edit (a template without the answers) leaves no entry.
    refused = client.patch(
        f"/api/judge-prompts/{prompt_id}/",
        {"template": "{{ question }}"},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert len(_entries(Action.JUDGE_PROMPT_EDIT)) == 1


def test_rewrite_prompt_edits_are_audited(admin_user):
    from evolution.prompts import evolution_prompt_for

    prompt = evolution_prompt_for("breadth")
    client = logged_in(admin_user)
    template = "同じ分野の別の指示を一つ: {{ instruction }}"
    response = client.post(
        f"/admin/evolution/evolutionprompt/{prompt.pk}/change/",
        {"template": template, "description": "mine", "active": "on"},
    )
    assert response.status_code == 302, _text(response)[-3000:]
    (edit,) = _entries(Action.REWRITE_PROMPT_EDIT)
    assert edit.user == admin_user
    assert edit.details["operation"] == "breadth"
    assert set(edit.details["fields"]) == {"template", "description"}
    # A template that never shows the instruction is refused: no entry.
    client.post(
        f"/admin/evolution/evolutionprompt/{prompt.pk}/change/",
        {"template": "新しい指示を一つ", "active": "on"},
    )
    assert len(_entries(Action.REWRITE_PROMPT_EDIT)) == 1


ANSWERS = [
    {"question_id": 1, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["富士山です。"]}]},
    {"question_id": 2, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["2です。"]}]},
]


@pytest.fixture
def id_set(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": n, "turns": [text]}, ensure_ascii=False) + "\n"
            for n, text in ((1, "日本一高い山は？"), (2, "1+1は？"))
        ),
        encoding="utf-8",
    )
    call_command("import_prompts", str(path), "--name", "ids")
    return PromptSet.objects.get(name="ids")


def _answers_file() -> bytes:
    return "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in ANSWERS).encode()


def test_answer_imports_are_audited_through_the_api_and_the_command(staff_user, id_set, tmp_path):
    client = logged_in(staff_user)
    upload = SimpleUploadedFile("gpt4.jsonl", _answers_file())
    response = client.post("/api/runs/import/", {"prompt_set": id_set.pk, "file": upload})
    assert response.status_code == 201, response.content
    run = GenerationRun.objects.get()
    (entry,) = _entries(Action.ANSWERS_IMPORT)
    assert (entry.user, entry.object_id) == (staff_user, str(run.pk))
    assert entry.details == {
        "model": "gpt-4",
        "prompt_set": "ids",
        "questions": 2,
        "answers": 2,
        "file": "gpt4.jsonl",
    }
    # A refused file leaves no entry.
    bad = SimpleUploadedFile("bad.jsonl", b'{"question_id": 99, "model_id": "x"}\n')
    assert (
        client.post("/api/runs/import/", {"prompt_set": id_set.pk, "file": bad}).status_code == 400
    )
    assert len(_entries(Action.ANSWERS_IMPORT)) == 1

    path = tmp_path / "mine.jsonl"
    path.write_bytes(_answers_file())
    call_command("import_answers", str(path), "--prompt-set", "ids", "--model", "my-sft")
    entries = _entries(Action.ANSWERS_IMPORT)
    assert [(e.actor, e.details["model"]) for e in entries] == [("staff", "gpt-4"), ("", "my-sft")]
