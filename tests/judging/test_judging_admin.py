"""The judging admin: judge prompts (preview, problems as form errors, a used version kept),
judge runs with their verdicts (cancel, retry), and the "Run LLM judge…" action on studies."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin import helpers
from django.core.files.uploadedfile import SimpleUploadedFile

from judging.models import JudgePrompt, JudgeRun
from judging.runs import judge_run_create, judge_run_execute
from tests.conftest import logged_in

from .factories import grading_run, idle_judge, judge_study, judging_staff
from .test_prompts import SHORT

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

PROMPTS = "/admin/judging/judgeprompt/"
RUNS = "/admin/judging/judgerun/"
STUDIES = "/admin/annotation/study/"


@pytest.fixture
def staff(django_user_model):
    return logged_in(judging_staff(django_user_model))


def _verdicts_of(staff, run) -> str:
    """The run page's link to its verdicts (their own list, 50 a page), checked and returned."""
    url = f"/admin/judging/judgment/?run__id__exact={run.pk}"
    assert f'href="{url}"' in staff.get(f"{RUNS}{run.pk}/change/").content.decode()
    return url


def _prompt_form(**changes) -> dict:
    fields = {
        "name": "",
        "description": "",
        "kind": "pairwise",
        "system_prompt": "",
        "template": "",
        "verdict_format": "last_line_123",
        "score_min": 1,
        "score_max": 5,
    }
    return {**fields, **changes}


# --- judge prompts -----------------------------------------------------------------------------


def test_the_prompt_pages_render_with_a_preview_of_the_shipped_prompt(staff):
    listed = staff.get(PROMPTS)
    assert listed.status_code == 200
    assert "ja_pairwise" in listed.content.decode() and "ja_grading" in listed.content.decode()
    prompt = JudgePrompt.objects.get(name="ja_grading")
    page = staff.get(f"{PROMPTS}{prompt.pk}/change/").content.decode()
    assert "Preview (sample question and answers)" in page
    assert "日本で一番高い山は何ですか？" in page  # the sample question, rendered
    assert "[system]" in page and "採点する公平な審査員" in page
    assert staff.get(f"{PROMPTS}add/").status_code == 200


def test_adding_a_prompt_stores_version_one(staff):
    response = staff.post(f"{PROMPTS}add/", _prompt_form(**SHORT))
    assert response.status_code == 302, response.content.decode()[:2000]
    row = JudgePrompt.objects.get(name="short_pairwise")
    assert (row.version, row.template, row.verdict_format) == (1, SHORT["template"], "brackets_abc")


def test_problems_show_on_their_own_fields_and_nothing_is_saved(staff):
    form = _prompt_form(**{**SHORT, "template": "{{ question }}", "kind": "grading"})
    response = staff.post(f"{PROMPTS}add/", form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["template"] == ["the prompt never shows: answer"]
    assert errors["verdict_format"] == ["a grading prompt reads one of: score, brackets_rating"]
    assert not JudgePrompt.objects.filter(name="short_pairwise").exists()


def test_saving_a_used_version_makes_the_next_and_says_so(staff):
    prompt = JudgePrompt.objects.create(**SHORT)
    judge_run_create(judge=idle_judge(), study=judge_study(), prompt=prompt, enqueue=False)
    form = _prompt_form(**{**SHORT, "system_prompt": "もっと厳しく。"})
    response = staff.post(f"{PROMPTS}{prompt.pk}/change/", form, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "A judge run used short_pairwise v1, so it is kept as it was" in page
    assert JudgePrompt.objects.get(pk=prompt.pk).system_prompt == SHORT["system_prompt"]
    newer = JudgePrompt.objects.get(name="short_pairwise", version=2)
    assert newer.system_prompt == "もっと厳しく。"
    # A used version offers no delete.
    assert staff.get(f"{PROMPTS}{prompt.pk}/delete/").status_code == 403


def test_a_prompts_name_and_kind_cannot_be_changed_on_its_page(staff):
    prompt = JudgePrompt.objects.create(**SHORT)
    form = _prompt_form(**{**SHORT, "name": "renamed", "kind": "grading"})
    assert staff.post(f"{PROMPTS}{prompt.pk}/change/", form).status_code == 302
    prompt.refresh_from_db()
    assert (prompt.name, prompt.kind) == ("short_pairwise", "pairwise")


def test_prompts_load_from_an_uploaded_file_and_a_bad_one_shows_its_error(staff):
    assert f"{PROMPTS}import/" in staff.get(PROMPTS).content.decode()
    assert staff.get(f"{PROMPTS}import/").status_code == 200
    good = SimpleUploadedFile("mine.json", json.dumps(SHORT).encode())
    response = staff.post(f"{PROMPTS}import/", {"file": good, "name": "uploaded"}, follow=True)
    row = JudgePrompt.objects.get(name="uploaded")
    assert (row.version, row.source) == (1, "mine.json")
    assert "Stored uploaded v1 from mine.json." in response.content.decode()
    bad = SimpleUploadedFile(
        "bad.json", json.dumps({**SHORT, "template": "{{ answer_1 }}"}).encode()
    )
    response = staff.post(f"{PROMPTS}import/", {"file": bad})
    assert response.status_code == 200
    assert "bad.json: template: the prompt never shows: question, answer_2" in (
        response.content.decode()
    )
    assert not JudgePrompt.objects.filter(name="short_pairwise").exists()


# --- judge runs --------------------------------------------------------------------------------


def test_a_run_lists_its_progress_and_counts_and_shows_every_verdict(
    staff, canned_judge, served_judge
):
    study = judge_study(models=2, questions=2)
    run = judge_run_execute(judge_run_create(judge=served_judge, study=study, enqueue=False).pk)
    listed = staff.get(RUNS).content.decode()
    assert "4/4 (100%) verdicts" in listed
    assert "judged 2/2: consistent" in listed
    page = staff.get(_verdicts_of(staff, run)).content.decode()
    assert page.count("answer a shown first") == 2 and page.count("answer b shown first") == 2
    outputs = set(run.judgments.values_list("raw_output", flat=True))
    assert outputs and all(output.split("\n")[0] in page for output in outputs)


def test_a_grading_runs_page_shows_each_graded_answer(staff):
    run = grading_run(judge_study(models=2, questions=2), idle_judge(), {(0, 1): 4, (1, 2): None})
    assert "graded 1, unparsable 1" in staff.get(RUNS).content.decode()
    verdicts = staff.get(_verdicts_of(staff, run)).content.decode()
    assert "question 1 turn 1" in verdicts and "評価: 4" in verdicts and "わかりません" in verdicts
    page = staff.get(f"{RUNS}{run.pk}/change/").content.decode()
    # The grades: a mean per model, and the exports.
    assert "<td>4.0</td><td>4.0 – 4.0</td><td>1</td><td>0</td>" in page
    assert "<td>-</td><td>- – -</td><td>0</td><td>1</td>" in page
    assert f"/api/judge-runs/{run.pk}/grades/?format=csv" in page


def test_runs_are_cancelled_and_retried_from_the_list(staff):
    run = judge_run_create(judge=idle_judge(), study=judge_study(), enqueue=False)
    selected = {helpers.ACTION_CHECKBOX_NAME: [run.pk]}
    staff.post(RUNS, {"action": "cancel_runs", **selected})
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.CANCELLED
    staff.post(RUNS, {"action": "retry_runs", **selected})
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.QUEUED


# --- the study action --------------------------------------------------------------------------


def test_the_study_action_asks_for_a_judge_then_queues_a_run_per_study(staff):
    study, judge = judge_study(models=2, questions=3), idle_judge()
    selected = {"action": "run_llm_judge", helpers.ACTION_CHECKBOX_NAME: [study.pk]}
    page = staff.post(STUDIES, selected)
    assert page.status_code == 200
    assert "Run an LLM judge" in page.content.decode()
    assert not JudgeRun.objects.exists()
    chosen = {"judge": judge.pk, "inconsistent": "exclude", "max_attempts": 2, "apply": "1"}
    response = staff.post(STUDIES, {**selected, **chosen}, follow=True)
    run = JudgeRun.objects.get()
    assert (run.study, run.judge, str(run.prompt)) == (study, judge, "ja_pairwise v1")
    assert (run.inconsistent, run.max_attempts, run.total) == ("exclude", 2, 6)
    assert f"Queued judge run {run.pk}" in response.content.decode()


def test_the_study_action_grades_with_the_grading_prompt_and_refuses_a_mismatch(staff):
    study, judge = judge_study(models=2, questions=2), idle_judge()
    selected = {"action": "run_llm_judge", helpers.ACTION_CHECKBOX_NAME: [study.pk]}
    pairwise = JudgePrompt.objects.get(name="ja_pairwise")
    chosen = {"judge": judge.pk, "inconsistent": "tie", "max_attempts": 3, "apply": "1"}
    page = staff.post(STUDIES, {**selected, **chosen, "prompt": pairwise.pk, "grading": "on"})
    assert page.status_code == 200
    assert "ja_pairwise v1 is a pairwise prompt; pick a grading one" in page.content.decode()
    assert not JudgeRun.objects.exists()
    staff.post(STUDIES, {**selected, **chosen, "grading": "on"})
    run = JudgeRun.objects.get()
    assert (str(run.prompt), run.total) == ("ja_grading v1", 4)


def test_staff_who_may_not_run_models_are_not_offered_the_judge(django_user_model):
    client = logged_in(judging_staff(django_user_model, "viewer", run_models=False))
    judge_study()
    page = client.get(STUDIES).content.decode()
    assert "Close the selected studies" in page
    assert "Run LLM judge" not in page


def test_a_judges_raw_output_is_shown_escaped(staff):
    run = grading_run(judge_study(models=2, questions=1), idle_judge(), {(0, 1): 3})
    run.judgments.update(raw_output="<script>alert('judge')</script>\n評価: 3")
    page = staff.get(_verdicts_of(staff, run)).content.decode()
    assert "<script>alert('judge')</script>" not in page
    assert "&lt;script&gt;alert(&#x27;judge&#x27;)&lt;/script&gt;" in page
