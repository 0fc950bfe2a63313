"""The audit log: each staff action that changes results or spends GPU time leaves one entry
(who, through which token, what, on which object), driven through the real API, admin and
services; a refused or rolled-back action leaves none; the admin shows the log read-only."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from annotation import studies
from annotation.models import IdentityFlag, Study
from evalsite.accounts.models import AuditEntry
from evalsite.accounts.services import api_token_create
from generation.importers import ParsedQuestion
from generation.models import FineTuneRun, GenerationRun
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create, generation_run_create_imported
from generation.training.finetune import finetune_run_create
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action


def two_model_study(*, name: str = "study", open_now: bool = False, answers=None) -> Study:
    """A study of two imported runs on two questions, built through the services."""
    prompt_set = prompt_set_create(
        name=f"{name}-prompts",
        questions=[ParsedQuestion(line=p, text=f"質問{p}: 眠れません。") for p in (1, 2)],
    )
    questions = list(prompt_set.questions.order_by("position"))
    runs = []
    for index, model_name in enumerate(["zebrafalcon-7b", "quokkaraven-3b"]):
        model = language_model_register(name=f"{name}-{model_name}", name_or_path=model_name)
        texts = {
            q.pk: (answers or {}).get((index, q.position), f"回答{index}-{q.position}です。")
            for q in questions
        }
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=texts)
        )
    return studies.study_create(name=name, runs=runs, votes_per_comparison=2, open_now=open_now)


def entries(action: str, obj) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(
            action=action,
            content_type=ContentType.objects.get_for_model(obj),
            object_id=str(obj.pk),
        )
    )


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def model():
    return language_model_register(name="tiny", name_or_path="tiny-0")


# --- generation runs ---------------------------------------------------------------------------


def test_a_run_started_through_the_api_with_a_token_names_the_user_and_the_token(
    client, staff_user, model, prompt_set, django_capture_on_commit_callbacks
):
    token, raw = api_token_create(user=staff_user, name="pipeline")
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            "/api/runs/",
            {"model": model.pk, "prompt_set": prompt_set.pk, "seed": 3},
            content_type="application/json",
            **bearer(raw),
        )
    assert response.status_code == 201, response.content
    run = GenerationRun.objects.get(pk=response.json()["id"])
    [entry] = entries(Action.GENERATION_RUN_START, run)
    assert (entry.user, entry.token, entry.actor) == (staff_user, token, "staff")
    assert entry.details["model"] == "tiny" and entry.details["prompt_set"] == "fixture"
    assert entry.details["seed"] == 3 and entry.details["questions"] == 100
    assert entry.object_repr == str(run)


def test_cancel_and_retry_through_the_api_are_recorded_and_a_refused_cancel_is_not(
    staff_user, model, prompt_set
):
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    client = logged_in(staff_user)
    assert client.post(f"/api/runs/{run.pk}/cancel/").status_code == 200
    assert client.post(f"/api/runs/{run.pk}/cancel/").status_code == 409  # already cancelled
    assert client.post(f"/api/runs/{run.pk}/retry/").status_code == 200
    assert client.post(f"/api/runs/{run.pk}/retry/").status_code == 409  # queued again
    [cancelled] = entries(Action.GENERATION_RUN_CANCEL, run)
    [retried] = entries(Action.GENERATION_RUN_RETRY, run)
    # A session, not a token: who is the user, through no token.
    assert (cancelled.user, cancelled.token) == (staff_user, None)
    assert retried.user == staff_user and retried.created_at >= cancelled.created_at


def test_the_admins_generate_cancel_and_retry_actions_are_recorded(
    admin_user, model, prompt_set, django_capture_on_commit_callbacks
):
    client = logged_in(admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            "/admin/generation/languagemodel/",
            {
                "action": "generate_answers",
                ACTION_CHECKBOX_NAME: [model.pk],
                "apply": "1",
                "prompt_set": prompt_set.pk,
                "seed": 0,
                "batch_size": 4,
                "params": "{}",
            },
        )
    assert response.status_code == 302
    run = GenerationRun.objects.get()
    url = "/admin/generation/generationrun/"
    for action in ["cancel_runs", "cancel_runs", "retry_runs"]:  # the second cancel is refused
        client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [run.pk]})
    assert [e.user for e in entries(Action.GENERATION_RUN_START, run)] == [admin_user]
    assert [e.user for e in entries(Action.GENERATION_RUN_CANCEL, run)] == [admin_user]
    assert [e.user for e in entries(Action.GENERATION_RUN_RETRY, run)] == [admin_user]


def test_a_run_whose_transaction_rolls_back_leaves_no_entry(model, prompt_set, staff_user):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        generation_run_create(model=model, prompt_set=prompt_set, user=staff_user, enqueue=False)
        raise Abort
    assert not GenerationRun.objects.exists()
    assert not AuditEntry.objects.exists()


def test_a_refused_run_leaves_no_entry(client, staff_user, model, prompt_set):
    response = logged_in(staff_user).post(
        "/api/runs/",
        {"model": model.pk, "prompt_set": prompt_set.pk, "params": {"temperature": -1}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert not AuditEntry.objects.exists()


# --- fine-tune runs ----------------------------------------------------------------------------


def test_fine_tune_start_cancel_and_resume_through_the_api_are_recorded(
    client, staff_user, model, fixture_dataset, django_capture_on_commit_callbacks
):
    token, raw = api_token_create(user=staff_user, name="ci")
    payload = {
        "base_model": model.pk,
        "datasets": [{"dataset": fixture_dataset.pk}],
        "max_steps": 5,
    }
    with django_capture_on_commit_callbacks(execute=False):
        created = client.post(
            "/api/finetune-runs/", payload, content_type="application/json", **bearer(raw)
        )
    assert created.status_code == 201, created.content
    run = FineTuneRun.objects.get(pk=created.json()["id"])
    client = logged_in(staff_user)
    runs = "/api/finetune-runs"
    assert client.post(f"{runs}/{run.pk}/resume/").status_code == 409  # queued: refused
    assert client.post(f"{runs}/{run.pk}/cancel/").status_code == 200
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(f"{runs}/{run.pk}/resume/").status_code == 200
    [started] = entries(Action.FINETUNE_RUN_START, run)
    assert (started.user, started.token) == (staff_user, token)
    assert started.details["base_model"] == "tiny" and started.details["method"] == "lora"
    assert started.details["datasets"] == [{"name": "instructions-ja", "rows": None}]
    assert [e.token for e in entries(Action.FINETUNE_RUN_CANCEL, run)] == [None]
    assert len(entries(Action.FINETUNE_RUN_RESUME, run)) == 1


def test_the_admins_fine_tune_cancel_and_resume_actions_are_recorded(
    admin_user, model, fixture_dataset
):
    run = finetune_run_create(base_model=model, datasets=[(fixture_dataset, None)], enqueue=False)
    assert [e.user for e in entries(Action.FINETUNE_RUN_START, run)] == [None]  # no user given
    client = logged_in(admin_user)
    url = "/admin/generation/finetunerun/"
    for action in ["resume_runs", "cancel_runs", "resume_runs"]:  # the first is refused
        client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [run.pk]})
    assert [e.user for e in entries(Action.FINETUNE_RUN_CANCEL, run)] == [admin_user]
    assert [e.user for e in entries(Action.FINETUNE_RUN_RESUME, run)] == [admin_user]


# --- studies and identity flags ----------------------------------------------------------------


def test_opening_and_closing_a_study_through_the_api_are_recorded_and_refusals_are_not(
    staff_user,
):
    study = two_model_study()
    client = logged_in(staff_user)
    assert client.post(f"/api/studies/{study.pk}/close/").status_code == 409  # a draft
    assert client.post(f"/api/studies/{study.pk}/open/").status_code == 200
    assert client.post(f"/api/studies/{study.pk}/open/").status_code == 409  # already open
    assert client.post(f"/api/studies/{study.pk}/close/").status_code == 200
    [opened] = entries(Action.STUDY_OPEN, study)
    [closed] = entries(Action.STUDY_CLOSE, study)
    assert opened.user == closed.user == staff_user
    assert opened.details == {
        "reopened": False,
        "identity_flags": 0,
        "identity_flags_unreviewed": 0,
    }
    assert closed.details == {"votes": 0}


def test_a_study_created_open_through_the_api_records_its_opening(staff_user):
    draft = two_model_study(name="source")
    response = logged_in(staff_user).post(
        "/api/studies/",
        {"name": "api-study", "runs": list(draft.runs.values_list("pk", flat=True)), "open": True},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    study = Study.objects.get(name="api-study")
    assert [e.user for e in entries(Action.STUDY_OPEN, study)] == [staff_user]


def test_the_admins_open_and_close_actions_are_recorded(admin_user):
    study = two_model_study()
    client = logged_in(admin_user)
    for action in ["open_studies", "open_studies", "close_studies"]:  # the second is refused
        client.post(
            "/admin/annotation/study/", {"action": action, ACTION_CHECKBOX_NAME: [study.pk]}
        )
    assert [e.user for e in entries(Action.STUDY_OPEN, study)] == [admin_user]
    assert [e.user for e in entries(Action.STUDY_CLOSE, study)] == [admin_user]


def test_unmasking_an_identity_flag_in_the_admin_is_recorded_and_masking_is_not(admin_user):
    study = two_model_study(open_now=True, answers={(1, 1): "私はChatGPTのように答えます。"})
    flag = IdentityFlag.objects.get(study=study, text="ChatGPT")
    assert flag.masked
    form = {
        "name": study.name,
        "title": "",
        "votes_per_comparison": "2",
        "instructions": "",
        "study_runs-TOTAL_FORMS": "0",
        "study_runs-INITIAL_FORMS": "0",
        "identity_flags-TOTAL_FORMS": "1",
        "identity_flags-INITIAL_FORMS": "1",
        "identity_flags-0-id": str(flag.pk),
        "identity_flags-0-study": str(study.pk),
        # "masked" left out: the box is unticked.
    }
    client = logged_in(admin_user)
    response = client.post(f"/admin/annotation/study/{study.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    flag.refresh_from_db()
    assert not flag.masked
    [entry] = entries(Action.IDENTITY_FLAG_UNMASK, flag)
    assert entry.user == admin_user
    assert entry.details["text"] == "ChatGPT" and entry.details["study"] == study.name
    # Masking it again (safer for blinding) is kept on the flag itself, not in the log.
    client.post(
        "/admin/annotation/study/",
        {"action": "mask_all_flags", ACTION_CHECKBOX_NAME: [study.pk]},
    )
    flag.refresh_from_db()
    assert flag.masked
    assert AuditEntry.objects.filter(action=Action.IDENTITY_FLAG_UNMASK).count() == 1


# --- the log in the admin ----------------------------------------------------------------------


def test_the_admin_shows_the_log_read_only(admin_user, staff_user):
    study = two_model_study()
    studies.study_open(study=study, user=admin_user)
    [entry] = AuditEntry.objects.all()
    client = logged_in(admin_user)
    changelist = client.get("/admin/accounts/auditentry/").content.decode()
    assert "study opened" in changelist and study.name in changelist
    page = client.get(f"/admin/accounts/auditentry/{entry.pk}/change/")
    assert page.status_code == 200
    assert "&quot;identity_flags&quot;: 0" in page.content.decode()
    # Nobody edits or removes evidence, a superuser included.
    assert client.get("/admin/accounts/auditentry/add/").status_code == 403
    assert client.post(f"/admin/accounts/auditentry/{entry.pk}/change/", {}).status_code == 403
    assert client.get(f"/admin/accounts/auditentry/{entry.pk}/delete/").status_code == 403
    assert AuditEntry.objects.count() == 1
    # Staff without the audit permission do not see it.
    assert logged_in(staff_user).get("/admin/accounts/auditentry/").status_code == 403


def test_the_admins_merge_action_is_recorded_and_a_refused_merge_is_not(admin_user, model):
    from generation.models import LanguageModel

    adapter = LanguageModel.objects.create(
        name="tiny-lora", name_or_path="tiny-0", base_model=model, adapter_path="ft/adapter"
    )
    client = logged_in(admin_user)
    for chosen in (model, adapter):  # the base model has no adapter: refused, not recorded
        response = client.post(
            "/admin/generation/languagemodel/",
            {
                "action": "merge_adapter",
                ACTION_CHECKBOX_NAME: [chosen.pk],
                "apply": "1",
                "name": "tiny-merged",
            },
        )
        # Refused: the form again with the refusal (errors on the spot); done: back to the list.
        assert response.status_code == (200 if chosen == model else 302)
    assert entries(Action.MODEL_MERGE, model) == []
    [entry] = entries(Action.MODEL_MERGE, adapter)
    assert entry.user == admin_user and entry.details == {"merged_name": "tiny-merged"}
