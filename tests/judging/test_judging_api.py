"""The staff API for judge prompts and judge runs: who may use it, versions kept, runs queued,
cancelled and retried, verdicts paged through, and a grading run's grades as JSON and CSV."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from judging.engine.presets import PRESETS
from judging.models import JudgePrompt, JudgeRun
from judging.runs import judge_run_create, judge_run_execute
from tests.conftest import logged_in

from .factories import (
    MODEL_NAMES,
    grading_run,
    idle_judge,
    judge_study,
    judging_staff,
)
from .test_prompts import SHORT

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

PROMPTS = "/api/judge-prompts/"
RUNS = "/api/judge-runs/"
SCORES = {(0, 1): 5, (0, 2): 3, (1, 1): 2, (1, 2): None}


@pytest.fixture
def staff(django_user_model):
    return logged_in(judging_staff(django_user_model))


def _post(client, url, data=None):
    return client.post(url, json.dumps(data or {}), content_type="application/json")


# --- who may ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [PROMPTS, RUNS])
def test_anonymous_users_are_refused(client, url):
    assert client.get(url).status_code in (401, 403)
    assert _post(client, url).status_code in (401, 403)


@pytest.mark.parametrize("url", [PROMPTS, RUNS])
def test_annotators_and_staff_without_judging_permissions_are_refused(
    annotator, bare_staff, staff_user, url
):
    for user in (annotator, bare_staff, staff_user):  # staff_user: generation and annotation only
        client = logged_in(user)
        assert client.get(url).status_code == 403
        assert _post(client, url).status_code == 403


def test_queueing_a_judge_needs_the_right_to_run_models(django_user_model):
    client = logged_in(judging_staff(django_user_model, "no-runner", run_models=False))
    study, judge = judge_study(), idle_judge()
    assert client.get(RUNS).status_code == 200
    response = _post(client, RUNS, {"judge": judge.pk, "study": study.pk})
    assert response.status_code == 403
    assert not JudgeRun.objects.exists()


def test_an_annotator_cannot_read_a_run_its_verdicts_or_its_grades(annotator):
    run = grading_run(judge_study(models=2, questions=2), idle_judge(), SCORES)
    client = logged_in(annotator)
    for path in ("", "judgments/", "grades/", "grades/?format=csv"):
        response = client.get(f"{RUNS}{run.pk}/{path}")
        assert response.status_code == 403
        assert idle_judge().name not in response.content.decode()


# --- judge prompts ------------------------------------------------------------------------------


def test_staff_list_the_shipped_prompts_and_filter_by_kind(staff):
    names = [p["name"] for p in staff.get(PROMPTS).json()["results"]]
    assert names == sorted(preset.name for preset in PRESETS)
    grading = staff.get(PROMPTS, {"kind": "grading"}).json()["results"]
    assert [(p["name"], p["version"], p["in_use"]) for p in grading] == [
        (preset.name, 1, False)
        for preset in sorted(PRESETS, key=lambda p: p.name)
        if preset.kind == "grading"
    ]


def test_staff_create_a_prompt_and_an_edit_of_a_used_version_answers_with_the_new_one(staff):
    created = _post(staff, PROMPTS, SHORT)
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["name"], body["version"], body["template"]) == (
        "short_pairwise",
        1,
        SHORT["template"],
    )
    prompt = JudgePrompt.objects.get(pk=body["id"])
    judge_run_create(judge=idle_judge(), study=judge_study(), prompt=prompt, enqueue=False)
    edited = staff.patch(
        f"{PROMPTS}{prompt.pk}/",
        json.dumps({"system_prompt": "  厳密に。\n"}),
        content_type="application/json",
    )
    assert edited.status_code == 200
    assert (edited.json()["version"], edited.json()["system_prompt"]) == (2, "  厳密に。\n")
    assert edited.json()["id"] != prompt.pk
    assert staff.get(f"{PROMPTS}{prompt.pk}/").json()["in_use"] is True


def test_a_bad_prompt_is_a_400_naming_the_field(staff):
    response = _post(staff, PROMPTS, {**SHORT, "template": "{{ question }} {{ answer_1 }}"})
    assert response.status_code == 400
    assert "template: the prompt never shows: answer_2" in response.json()["detail"]
    assert not JudgePrompt.objects.filter(name="short_pairwise").exists()


def test_a_used_version_cannot_be_deleted_through_the_api(staff):
    prompt = JudgePrompt.objects.get(name="ja_pairwise")
    judge_run_create(judge=idle_judge(), study=judge_study(), enqueue=False)
    response = staff.delete(f"{PROMPTS}{prompt.pk}/")
    assert response.status_code == 400
    assert "was used by a judge run" in response.json()["detail"]


def test_the_preview_renders_samples_or_the_values_sent(staff):
    prompt = JudgePrompt.objects.get(name="ja_pairwise")
    sample = _post(staff, f"{PROMPTS}{prompt.pk}/preview/").json()
    assert "日本で一番高い山は何ですか？" in sample["prompt"]
    assert sample["system_prompt"] == prompt.system_prompt
    given = _post(
        staff,
        f"{PROMPTS}{prompt.pk}/preview/",
        {"question": "問い", "answer_1": "一", "answer_2": "二", "criteria": "簡潔さ"},
    ).json()
    assert "[回答1]\n一" in given["prompt"] and "簡潔さ" in given["prompt"]
    wrong = _post(staff, f"{PROMPTS}{prompt.pk}/preview/", {"answer": "x"})
    assert wrong.status_code == 400
    assert "a pairwise prompt has no answer" in wrong.json()["detail"]


def test_staff_upload_a_prompt_file_and_a_bad_one_is_a_400_naming_the_line(staff):
    good = SimpleUploadedFile("mine.jsonl", (json.dumps(SHORT) + "\n").encode())
    response = staff.post(f"{PROMPTS}import/", {"file": good})
    assert response.status_code == 201, response.content
    assert [(p["name"], p["source"]) for p in response.json()] == [("short_pairwise", "mine.jsonl")]
    bad_line = json.dumps({**SHORT, "name": "second", "verdict_format": "score"})
    bad = SimpleUploadedFile("two.jsonl", f"{json.dumps(SHORT)}\n{bad_line}\n".encode())
    response = staff.post(f"{PROMPTS}import/", {"file": bad})
    assert response.status_code == 400
    assert "two.jsonl, line 2: verdict_format" in response.json()["file"][0]
    assert not JudgePrompt.objects.filter(name="second").exists()


# --- judge runs ---------------------------------------------------------------------------------


def test_staff_queue_a_judge_run_and_read_it_with_its_counts(staff):
    study, judge = judge_study(models=3, questions=2), idle_judge()
    response = _post(staff, RUNS, {"judge": judge.pk, "study": study.pk, "max_attempts": 2})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["total"], body["max_attempts"]) == ("queued", 12, 2)
    assert body["prompt"]["name"] == "ja_pairwise" and body["judge_name"] == judge.name
    detail = staff.get(f"{RUNS}{body['id']}/").json()
    assert detail["summary"] == {
        "judged": 0,
        "expected": 6,
        "consistent": 0,
        "inconsistent": 0,
        "unparsable": 0,
        "votes": 0,
    }
    assert detail["grades"] is None
    listed = staff.get(RUNS, {"study": study.pk}).json()["results"]
    assert [r["id"] for r in listed] == [body["id"]]


def test_a_run_the_service_refuses_is_a_400_saying_why(staff):
    study, judge = judge_study(), idle_judge()
    elsewhere = judge_study().comparisons.first()
    response = _post(
        staff, RUNS, {"judge": judge.pk, "study": study.pk, "comparisons": [elsewhere.pk]}
    )
    assert response.status_code == 400
    assert f"comparison(s) {elsewhere.pk} do not belong to study" in response.json()["detail"]
    grading_prompt = JudgePrompt.objects.get(name="ja_grading")
    response = _post(
        staff, RUNS, {"judge": judge.pk, "study": study.pk, "prompt": grading_prompt.pk}
    )
    assert response.status_code == 400
    assert "is a grading prompt" in response.json()["detail"]
    assert not JudgeRun.objects.exists()


def test_cancel_then_retry_through_the_api(staff):
    run = judge_run_create(judge=idle_judge(), study=judge_study(), enqueue=False)
    cancelled = _post(staff, f"{RUNS}{run.pk}/cancel/")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    again = _post(staff, f"{RUNS}{run.pk}/cancel/")
    assert again.status_code == 409
    assert "only queued or running runs can be cancelled" in again.json()["detail"]
    retried = _post(staff, f"{RUNS}{run.pk}/retry/")
    assert (retried.status_code, retried.json()["status"]) == (200, "queued")


def test_the_verdicts_of_a_run_are_paged_in_comparison_and_order(staff, canned_judge, served_judge):
    study = judge_study(models=2, questions=3)
    run = judge_run_execute(judge_run_create(judge=served_judge, study=study, enqueue=False).pk)
    assert run.status == "succeeded"
    page = staff.get(f"{RUNS}{run.pk}/judgments/", {"limit": 4}).json()
    assert page["count"] == 6 and len(page["results"]) == 4 and page["next"]
    first = page["results"][0]
    assert (first["first"], first["question"], first["attempts"]) == ("a", 1, 1)
    assert first["raw_output"].splitlines()[-1] in {"1", "2", "3"}  # the canned judge's reply
    assert first["prompt_text"] and first["verdict"] in {"a", "b", "tie"}
    rest = staff.get(f"{RUNS}{run.pk}/judgments/", {"limit": 4, "offset": 4}).json()
    everything = page["results"] + rest["results"]
    assert [(j["comparison"], j["first"]) for j in everything] == sorted(
        (c, f) for c in study.comparisons.values_list("pk", flat=True) for f in ("a", "b")
    )
    assert {j["question"] for j in everything} == {1, 2, 3}


def test_a_grading_runs_grades_come_as_json_in_the_run_and_as_csv(staff):
    study = judge_study(models=2, questions=2)
    run = grading_run(study, idle_judge(), SCORES)
    detail = staff.get(f"{RUNS}{run.pk}/").json()
    assert detail["summary"] == {"graded": 3, "unparsable": 1, "expected": 4}
    means = {m["model"]: m["mean"] for m in detail["grades"]["models"]}
    assert means == {MODEL_NAMES[0]: 4.0, MODEL_NAMES[1]: 2.0}
    as_json = staff.get(f"{RUNS}{run.pk}/grades/", {"format": "json"})
    assert as_json["content-type"].startswith("application/json")
    assert as_json.json() == detail["grades"]
    as_csv = staff.get(f"{RUNS}{run.pk}/grades/", {"format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv["content-type"].startswith("text/csv")
    assert f"judge-run-{run.pk}-grades.csv" in as_csv["content-disposition"]
    lines = as_csv.content.decode().splitlines()
    assert lines[0] == f"position,turn,question,{MODEL_NAMES[0]},{MODEL_NAMES[1]}"
    assert lines[1:] == [
        "1,1,質問1: 朝の散歩を続けるこつは？,5,2",
        "2,1,質問2: 朝の散歩を続けるこつは？,3,",
    ]


def test_a_pairwise_run_has_no_grades_to_export(staff):
    run = judge_run_create(judge=idle_judge(), study=judge_study(), enqueue=False)
    response = staff.get(f"{RUNS}{run.pk}/grades/", {"format": "csv"})
    assert response.status_code == 409
    assert "is a pairwise run" in response.content.decode()


def test_the_openapi_schema_describes_the_judging_endpoints(staff):
    response = staff.get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    for path in (
        "/api/judge-prompts/{id}/preview/",
        "/api/judge-prompts/import/",
        "/api/judge-runs/{id}/cancel/",
        "/api/judge-runs/{id}/judgments/",
        "/api/judge-runs/{id}/grades/",
    ):
        assert path in text
