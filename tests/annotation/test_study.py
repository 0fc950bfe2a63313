"""Creating, opening and closing studies; identity flags and masks; the staff admin and API."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command

from annotation import studies
from annotation.identity import MASK, apply_masks, find_identity_spans, identity_terms
from annotation.loop.votes import vote_record
from annotation.models import Assignment, Comparison, IdentityFlag, Study, StudyRun, Vote
from evalsite.errors import ServiceError
from generation.models import GenerationRun
from generation.runs import generation_run_create_imported
from tests.conftest import logged_in

from .conftest import PAIR_FIELDS

pytestmark = pytest.mark.django_db


# --- creation ----------------------------------------------------------------------------------


def test_creating_a_study_builds_every_pair_of_models_on_every_question(make_runs):
    built = make_runs(models=3, questions=100)
    study = studies.study_create(name="three", runs=built.runs, votes_per_comparison=2)
    comparisons = Comparison.objects.filter(study=study)
    assert comparisons.count() == 300
    assert study.status == Study.Status.DRAFT and study.votes_per_comparison == 2
    assert StudyRun.objects.filter(study=study).count() == 3
    pairs = set(comparisons.values_list("run_a", "run_b").distinct())
    ids = sorted(r.pk for r in built.runs)
    assert pairs == {(ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[2])}
    for c in comparisons.select_related("answer_a", "answer_b"):
        assert c.run_a_id < c.run_b_id
        assert (c.answer_a.run_id, c.answer_b.run_id) == (c.run_a_id, c.run_b_id)
        assert c.answer_a.question_id == c.answer_b.question_id == c.question_id
    assert comparisons.values("question").distinct().count() == 100


def test_creating_a_study_with_open_opens_it(make_runs):
    built = make_runs(models=2, questions=2)
    study = studies.study_create(name="now", runs=built.runs, open_now=True)
    assert study.status == Study.Status.OPEN and study.opened_at is not None


def _refusal(make_runs, case):
    built = make_runs(models=3, questions=2)
    runs = built.runs
    if case == "unfinished":
        running = GenerationRun.objects.create(
            model=built.models[2], prompt_set=built.prompt_set, status="running", total=2
        )
        return [runs[0], running], studies.RUN_NOT_SUCCEEDED.format(id=running.pk, status="running")
    if case == "prompt sets":
        other = make_runs(models=2, questions=2)
        return [runs[0], other.runs[1]], studies.MIXED_PROMPT_SETS.format(
            names=f"{built.prompt_set.name}, {other.prompt_set.name}"
        )
    if case == "same model":
        again = generation_run_create_imported(
            model=built.models[0],
            prompt_set=built.prompt_set,
            answers={q.pk: "別の回答" for q in built.prompt_set.questions.all()},
        )
        return [runs[0], again, runs[1]], studies.SAME_MODEL_TWICE.format(
            ids=f"{runs[0].pk}, {again.pk}", model=built.models[0].name
        )
    if case == "one model":
        return [runs[0]], studies.TOO_FEW_MODELS
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unfinished", "prompt sets", "same model", "one model"])
def test_it_refuses_runs_that_cannot_make_a_study_with_a_clear_message(make_runs, case):
    runs, message = _refusal(make_runs, case)
    with pytest.raises(ServiceError) as refused:
        studies.study_create(name="refused", runs=runs)
    assert str(refused.value) == message
    assert not Study.objects.exists() and not Comparison.objects.exists()


def test_it_refuses_a_taken_name_and_k_below_one(make_runs):
    built = make_runs(models=2, questions=1)
    studies.study_create(name="taken", runs=built.runs)
    with pytest.raises(
        ServiceError, match=re.escape(studies.STUDY_NAME_TAKEN.format(name="taken"))
    ):
        studies.study_create(name="taken", runs=built.runs)
    with pytest.raises(ServiceError, match=studies.BAD_VOTES_PER_COMPARISON):
        studies.study_create(name="zero", runs=built.runs, votes_per_comparison=0)
    assert Study.objects.count() == 1


@pytest.mark.parametrize(
    ("field", "text", "term"),
    [
        ("title", "zebrafalcon-7b-sft と他の比較", "zebrafalcon-7b-sft"),
        ("instructions", "Quokka Labs のモデルも含まれます。", "Quokka Labs"),
        ("instructions", "重みは acme-zebra にあります", "acme-zebra"),
    ],
)
def test_it_refuses_annotator_facing_text_that_names_a_model(make_runs, field, text, term):
    built = make_runs(models=2, questions=1)
    with pytest.raises(ServiceError) as refused:
        studies.study_create(name="named", runs=built.runs, **{field: text})
    assert str(refused.value) == studies.TEXT_NAMES_MODEL.format(field=field, term=term)
    assert not Study.objects.exists()


def test_create_study_command_builds_and_opens_a_study(make_runs):
    built = make_runs(models=3, questions=4)
    ids = [str(r.pk) for r in built.runs]
    call_command(
        "create_study",
        "cmd-study",
        "--prompt-set",
        built.prompt_set.name,
        "--runs",
        *ids,
        "--votes-per-comparison",
        "5",
        "--open",
    )
    study = Study.objects.get(name="cmd-study")
    assert study.status == Study.Status.OPEN and study.votes_per_comparison == 5
    assert study.comparisons.count() == 12


def _create_study_command(prompt_set, runs) -> None:
    call_command(
        "create_study", "x", "--prompt-set", prompt_set.name, "--runs", *[str(r.pk) for r in runs]
    )


def test_create_study_command_refuses_with_the_services_message(make_runs):
    built = make_runs(models=2, questions=2)
    other = make_runs(models=2, questions=2)
    with pytest.raises(CommandError, match="no prompt set named 'nope'"):
        call_command("create_study", "x", "--prompt-set", "nope", "--runs", "1", "2")
    with pytest.raises(CommandError) as refused:
        _create_study_command(built.prompt_set, [built.runs[0], other.runs[1]])
    assert "different prompt sets" in str(refused.value)
    with pytest.raises(CommandError) as wrong_set:
        _create_study_command(built.prompt_set, other.runs)
    assert str(wrong_set.value) == studies.WRONG_PROMPT_SET.format(
        id=other.runs[0].pk, actual=other.prompt_set.name, expected=built.prompt_set.name
    )
    assert not Study.objects.exists()


def test_opening_and_closing_moves_the_status_and_refuses_twice(make_study):
    study = make_study(open_now=False)
    studies.study_open(study=study)
    with pytest.raises(ServiceError, match="only a draft or closed study can be opened"):
        studies.study_open(study=study)
    studies.study_close(study=study)
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED and study.closed_at is not None
    with pytest.raises(ServiceError, match="only an open study can be closed"):
        studies.study_close(study=study)


# --- identity flags and masks -----------------------------------------------------------------


def test_the_finder_flags_names_makers_words_and_self_introductions():
    terms = identity_terms(
        names=["zebrafalcon-7b-sft", "acme-zebra/zebrafalcon-7b-sft"],
        makers=["Zebracorp"],
        words=["OpenAI", "LINE"],
    )
    text = (
        "私はzebrafalcon-7b-sftです。Zebracorpによって開発されました。"
        "私はOpenAIとは関係ありません。Pipeline and a line of code are fine. "
        "私はLINEのサービスです。OpenAIの論文を読みました。"
    )
    spans = find_identity_spans(text, terms)
    found = {(s.kind, s.text) for s in spans}
    assert ("name", "zebrafalcon-7b-sft") in found
    assert ("maker", "Zebracorp") in found
    assert ("word", "OpenAI") in found
    assert ("word", "LINE") in found
    assert ("self_intro", "私はzebrafalcon-7b-sftです") in found
    assert ("developed_by", "Zebracorpによって開発されました") in found
    assert not any(s.text.lower() == "line" and s.text != "LINE" for s in spans)
    assert "Pipeline" not in {s.text for s in spans}
    # A settings word in a sentence that says nothing of the model itself names a company.
    assert [s.start for s in spans if s.text == "OpenAI"] == [text.index("OpenAI")]


def test_masks_replace_merged_spans_with_a_marker():
    assert apply_masks("abcdef", [(1, 3), (2, 4)]) == f"a{MASK}ef"
    assert apply_masks("abcdef", []) == "abcdef"
    assert apply_masks("私はXです。", [(0, 5)]) == f"{MASK}。"


def _identity_answers(model_index: int, position: int) -> str:
    if model_index == 0 and position == 1:
        return (
            "私はzebrafalcon-7b-sftです。Zebracorpによって開発されたAIです。\n"
            "答え: 早く寝ましょう。"
        )
    if model_index == 1 and position == 1:
        return "AIアシスタントとしてChatGPTのように答えます。早寝早起きが大事です。"
    return f"普通の回答{model_index}-{position}。"


def test_a_new_study_lists_self_identifying_answers_for_review_before_it_opens(make_study):
    study = make_study(models=2, questions=2, open_now=False, answers=_identity_answers)
    # Found at creation, so staff can review them while the study is a draft.
    assert IdentityFlag.objects.filter(study=study, reviewed_at__isnull=True).exists()
    studies.study_open(study=study)
    flags = IdentityFlag.objects.filter(study=study)
    texts = {f.text for f in flags}
    assert "zebrafalcon-7b-sft" in texts and "Zebracorp" in texts and "ChatGPT" in texts
    assert {f.kind for f in flags} >= {"name", "maker", "word", "self_intro", "developed_by"}
    # Nobody reviewed them: they open masked.
    assert not flags.filter(masked=False).exists()
    assert not flags.filter(reviewed_at__isnull=False).exists()
    # Only the two answers that speak of themselves are flagged.
    assert flags.values("answer").distinct().count() == 2


def test_masked_spans_are_replaced_for_annotators_and_unmasked_ones_are_not(
    make_study, annotator, admin_user
):
    study = make_study(models=2, questions=1, answers=_identity_answers)
    client = logged_in(annotator)
    # Opening the study masked every flagged span: the annotator never sees the name.
    first = client.get(f"/api/studies/{study.pk}/next/").json()
    shown = first["left"] + first["right"]
    for word in ["zebrafalcon", "Zebracorp", "ChatGPT", "私は"]:
        assert word not in shown
    assert MASK in shown
    assert "答え: 早く寝ましょう。" in shown and "早寝早起きが大事です。" in shown
    # The stored answers are untouched.
    assert "zebrafalcon" in study.built.texts[(study.built.runs[0].pk, 1)]
    # Staff judge "ChatGPT" harmless here and unmask it: shown again, and the decision is kept.
    flag = IdentityFlag.objects.get(study=study, text="ChatGPT")
    assert studies.identity_flags_mask(flags=[flag], masked=False, user=admin_user) == 1
    flag.refresh_from_db()
    assert not flag.masked and flag.reviewed_by == admin_user and flag.reviewed_at is not None
    again = client.get(f"/api/studies/{study.pk}/next/").json()
    assert "ChatGPT" in again["left"] + again["right"]
    assert "zebrafalcon" not in again["left"] + again["right"]


def test_a_rescan_keeps_the_admins_mask_decisions(make_study, admin_user):
    study = make_study(models=2, questions=1, answers=_identity_answers)
    flag = IdentityFlag.objects.filter(study=study, text="ChatGPT").get()
    studies.identity_flags_mask(flags=[flag], masked=False, user=admin_user)
    studies.study_flag_identity(study=study)
    assert not IdentityFlag.objects.get(pk=flag.pk).masked


# --- admin --------------------------------------------------------------------------------------


def test_the_study_admin_shows_flags_and_can_mask_them(make_study, admin_user):
    study = make_study(models=2, questions=1, answers=_identity_answers)
    client = logged_in(admin_user)
    changelist = client.get("/admin/annotation/study/").content.decode()
    flags = IdentityFlag.objects.filter(study=study).count()
    assert f"{flags} ({flags} masked)" in changelist
    studies.identity_flags_mask(flags=IdentityFlag.objects.filter(study=study), masked=False)
    changelist = client.get("/admin/annotation/study/").content.decode()
    assert f"{flags} (0 masked)" in changelist
    change = client.get(f"/admin/annotation/study/{study.pk}/change/").content.decode()
    assert "Identity flags" in change and "<mark>Zebracorp</mark>" in change
    response = client.post(
        "/admin/annotation/study/",
        {"action": "mask_all_flags", ACTION_CHECKBOX_NAME: [study.pk]},
    )
    assert response.status_code == 302
    assert IdentityFlag.objects.filter(study=study, masked=False).count() == 0


def test_the_study_admin_refuses_instructions_that_name_a_model(make_study, admin_user):
    study = make_study(models=2, questions=1)
    response = logged_in(admin_user).post(
        f"/admin/annotation/study/{study.pk}/change/",
        {
            "name": study.name,
            "title": "",
            "votes_per_comparison": "2",
            "instructions": "片方は zebrafalcon-7b-sft です。",
            "identity_flags-TOTAL_FORMS": "0",
            "identity_flags-INITIAL_FORMS": "0",
            "study_runs-TOTAL_FORMS": "0",
            "study_runs-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert studies.TEXT_NAMES_MODEL.format(
        field="instructions", term="zebrafalcon-7b-sft"
    ) in response.content.decode().replace("&#x27;", "'")
    study.refresh_from_db()
    assert "zebrafalcon" not in study.instructions


def test_the_study_admin_opens_and_closes_studies(make_study, admin_user):
    study = make_study(open_now=False)
    client = logged_in(admin_user)
    client.post(
        "/admin/annotation/study/", {"action": "open_studies", ACTION_CHECKBOX_NAME: [study.pk]}
    )
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN
    client.post(
        "/admin/annotation/study/", {"action": "close_studies", ACTION_CHECKBOX_NAME: [study.pk]}
    )
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED


def test_the_run_admin_action_asks_for_details_then_opens_a_study(make_runs, admin_user):
    built = make_runs(models=3, questions=4)
    client = logged_in(admin_user)
    selected = {"action": "open_study_action", ACTION_CHECKBOX_NAME: [r.pk for r in built.runs]}
    page = client.post("/admin/generation/generationrun/", selected)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Open a study comparing these runs" in html and "12 comparisons" in html
    response = client.post(
        "/admin/generation/generationrun/",
        {
            **selected,
            "apply": "1",
            "name": "from-admin",
            "title": "睡眠の質問",
            "votes_per_comparison": "4",
            "instructions": "よく読んでください。",
            "open_now": "on",
        },
    )
    study = Study.objects.get(name="from-admin")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/annotation/study/{study.pk}/change/"
    assert study.status == Study.Status.OPEN and study.votes_per_comparison == 4
    assert study.title == "睡眠の質問" and study.comparisons.count() == 12


def test_the_run_admin_action_refuses_unsuitable_runs_with_the_message(make_runs, admin_user):
    built = make_runs(models=2, questions=2)
    client = logged_in(admin_user)
    response = client.post(
        "/admin/generation/generationrun/",
        {"action": "open_study_action", ACTION_CHECKBOX_NAME: [built.runs[0].pk]},
        follow=True,
    )
    assert studies.TOO_FEW_MODELS in response.content.decode()
    assert not Study.objects.exists()


def test_comparison_and_vote_admin_are_read_only(
    make_study, admin_user, annotator, next_assignment
):
    study = make_study(models=2, questions=1)
    assignment = next_assignment(study, annotator)
    vote, _ = vote_record(assignment=assignment, choice="left")
    client = logged_in(admin_user)
    for url in [
        "/admin/annotation/comparison/",
        "/admin/annotation/vote/",
        "/admin/annotation/assignment/",
    ]:
        assert client.get(url).status_code == 200
    assert client.get("/admin/annotation/vote/add/").status_code == 403
    response = client.post(
        f"/admin/annotation/vote/{vote.pk}/change/", {"outcome": "b", "shown": "right"}
    )
    assert response.status_code == 403
    vote.refresh_from_db()
    assert vote.outcome == ("a" if assignment.left == "a" else "b")
    assert Assignment.objects.count() == 1 and Vote.objects.count() == 1


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/annotation/study/",
        "/admin/annotation/vote/",
        "/admin/generation/generationrun/",
    ],
)
def test_annotators_are_sent_to_the_admin_login_on_staff_pages(annotator, url):
    response = logged_in(annotator).get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", ["/api/studies/", "/api/runs/", "/api/models/"])
def test_annotators_get_403_on_the_staff_api(annotator, url):
    assert logged_in(annotator).get(url).status_code == 403


def test_staff_create_open_and_list_studies_through_the_api(make_runs, staff_user):
    built = make_runs(models=2, questions=3)
    client = logged_in(staff_user)
    response = client.post(
        "/api/studies/",
        {"name": "api-study", "runs": [r.pk for r in built.runs], "votes_per_comparison": 2},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    study_id = response.json()["id"]
    assert response.json()["comparisons"] == 3 and response.json()["status"] == "draft"
    assert client.post(f"/api/studies/{study_id}/open/").json()["status"] == "open"
    assert client.post(f"/api/studies/{study_id}/open/").status_code == 409
    listed = client.get("/api/studies/").json()
    assert [s["name"] for s in listed["results"]] == ["api-study"]
    refused = client.post(
        "/api/studies/",
        {"name": "bad", "runs": [built.runs[0].pk]},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert refused.json() == {"detail": studies.TOO_FEW_MODELS}


def test_the_openapi_schema_documents_the_annotator_contract(admin_user):
    response = logged_in(admin_user).get("/api/schema/", headers={"accept": "application/json"})
    assert response.status_code == 200
    schema = response.json()
    next_op = schema["paths"]["/api/studies/{study_id}/next/"]["get"]
    assert set(next_op["responses"]) >= {"200", "204"}
    vote_op = schema["paths"]["/api/assignments/{token}/vote/"]["post"]
    assert set(vote_op["responses"]) >= {"200", "201", "400", "404", "409"}
    ref = next_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert list(component["properties"]) == PAIR_FIELDS


def test_the_run_admin_action_sets_sampling_quota_and_gold_rate(make_runs, admin_user):
    built = make_runs(models=2, questions=2)
    client = logged_in(admin_user)
    selected = {"action": "open_study_action", ACTION_CHECKBOX_NAME: [r.pk for r in built.runs]}
    assert (
        'name="sampling"'
        in client.post("/admin/generation/generationrun/", selected).content.decode()
    )
    client.post(
        "/admin/generation/generationrun/",
        {
            **selected,
            "apply": "1",
            "name": "active-from-admin",
            "votes_per_comparison": "2",
            "sampling": "active",
            "quota": "10",
            "gold_rate": "0.1",
        },
    )
    study = Study.objects.get(name="active-from-admin")
    assert (study.sampling, study.quota, study.gold_rate) == ("active", 10, 0.1)


def test_the_study_admin_edits_sampling_and_its_floor(make_study, admin_user):
    study = make_study(models=2, questions=1)
    client = logged_in(admin_user)
    change = client.get(f"/admin/annotation/study/{study.pk}/change/").content.decode()
    assert 'name="sampling"' in change and 'name="sampling_floor"' in change
    response = client.post(
        f"/admin/annotation/study/{study.pk}/change/",
        {
            "name": study.name,
            "title": "",
            "votes_per_comparison": "2",
            "instructions": "",
            "sampling": "active",
            "sampling_floor": "0.35",
            "identity_flags-TOTAL_FORMS": "0",
            "identity_flags-INITIAL_FORMS": "0",
            "study_runs-TOTAL_FORMS": "0",
            "study_runs-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    study.refresh_from_db()
    assert (study.sampling, study.sampling_floor) == ("active", 0.35)


def test_create_study_command_takes_the_sampling(make_runs):
    built = make_runs(models=2, questions=2)
    ids = [str(r.pk) for r in built.runs]
    call_command(
        "create_study",
        "active",
        "--prompt-set",
        built.prompt_set.name,
        "--runs",
        *ids,
        "--sampling",
        "active",
    )
    assert Study.objects.get(name="active").sampling == Study.Sampling.ACTIVE
    with pytest.raises(CommandError, match="invalid choice: 'greedy'"):
        call_command(
            "create_study",
            "x",
            "--prompt-set",
            built.prompt_set.name,
            "--runs",
            *ids,
            "--sampling",
            "greedy",
        )
    with pytest.raises(ServiceError, match="unknown sampling 'greedy'"):
        studies.study_create(name="y", runs=built.runs, sampling="greedy")
    assert not Study.objects.filter(name__in=["x", "y"]).exists()
