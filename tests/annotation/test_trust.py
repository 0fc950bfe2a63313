"""Votes a team can trust: both-bad ties, skips, gold checks, exclusions, pools, time on task,
display labels and the side each pair is counted from."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from annotation import gold, quality, results, results_export
from annotation.models import AnnotatorExclusion, Assignment, Comparison, Study, Vote
from tests.conftest import logged_in

from .conftest import PAIR_FIELDS

pytestmark = pytest.mark.django_db


def _next(client, study):
    return client.get(f"/api/studies/{study.pk}/next/")


def _vote(client, token, choice, **extra):
    body = {"choice": choice, **extra}
    return client.post(f"/api/assignments/{token}/vote/", body, content_type="application/json")


def _skip(client, token, reason):
    body = {"reason": reason}
    return client.post(f"/api/assignments/{token}/skip/", body, content_type="application/json")


def _vote_all(client, study, choose) -> int:
    n = 0
    while (response := _next(client, study)).status_code == 200:
        assert _vote(client, response.json()["token"], choose(n)).status_code == 201
        n += 1
    assert response.status_code == 204
    return n


# --- both-good and both-bad ties ---------------------------------------------------------------


def test_both_kinds_of_tie_are_stored_counted_and_reported_per_pair(make_study, annotator):
    study = make_study(models=2, questions=4, k=1)
    client = logged_in(annotator)
    choices = ["tie", "tie_bothbad", "tie_bothbad", "left"]
    _vote_all(client, study, lambda i: choices[i])

    kinds = sorted(Vote.objects.filter(comparison__study=study).values_list("tie_kind", flat=True))
    assert kinds == ["", "bothbad", "bothbad", "bothgood"]
    assert Vote.objects.filter(tie_kind="bothbad", outcome="tie", shown="tie").count() == 2
    found = results.study_results(study=study, bootstrap=0)
    (pair,) = found.pairs
    assert (pair.ties, pair.ties_bothbad, pair.games) == (3, 2, 4)
    data = results_export.results_json(found)
    assert data["pairs"][0]["ties"] == 3 and data["pairs"][0]["ties_bothbad"] == 2
    page = logged_in_staff_page(study)
    assert "of the ties: both bad" in page


def logged_in_staff_page(study) -> str:
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_superuser("results-reader", password="x")
    return logged_in(staff).get(f"/studies/{study.pk}/results/").content.decode()


def test_the_same_tie_again_is_unchanged_and_the_other_kind_conflicts(make_study, annotator):
    study = make_study(models=2, questions=2, k=1)
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    first = _vote(client, token, "tie_bothbad")
    assert first.status_code == 201 and first.json()["choice"] == "tie_bothbad"
    again = _vote(client, token, "tie_bothbad")
    assert again.status_code == 200 and again.json()["choice"] == "tie_bothbad"
    assert _vote(client, token, "tie").status_code == 409
    bad = _vote(client, token, "both")
    assert bad.status_code == 400 and "tie_bothbad" in bad.json()["choice"][0]


def test_tie_bothbad_round_trips_through_the_battle_export_and_import(
    tmp_path, make_study, annotator
):
    study = make_study(models=3, questions=2, k=1)
    pattern = ["tie_bothbad", "tie", "left", "right", "tie_bothbad", "tie"]
    _vote_all(logged_in(annotator), study, lambda i: pattern[i])
    text = results_export.export(study=study, fmt="battles")[0]
    winners = sorted(json.loads(line)["winner"] for line in text.splitlines())
    assert winners.count("tie (bothbad)") == 2 and winners.count("tie") == 2

    path = tmp_path / "battles.jsonl"
    path.write_text(text, encoding="utf-8")
    call_command("import_votes", str(path), "--study", "copy")
    copy = Study.objects.get(name="copy")
    imported = Vote.objects.filter(comparison__study=copy)
    assert imported.filter(outcome="tie", tie_kind="bothbad").count() == 2
    assert imported.filter(outcome="tie", tie_kind="bothgood").count() == 2
    again = results_export.export(study=copy, fmt="battles")[0]
    ties = [json.loads(line)["winner"] for line in again.splitlines()]
    assert (ties.count("tie (bothbad)"), ties.count("tie")) == (2, 2)


# --- skips -------------------------------------------------------------------------------------


def test_a_skipped_pair_goes_to_someone_else_and_staff_see_it(
    make_study, annotator, other_annotator, staff_user
):
    study = make_study(models=2, questions=1, k=1)  # one comparison, one vote wanted
    me, other = logged_in(annotator), logged_in(other_annotator)
    pair = _next(me, study).json()
    assert _next(other, study).status_code == 204  # my lease holds the only slot
    assert _skip(me, pair["token"], "sideways").status_code == 400
    skipped = _skip(me, pair["token"], "broken")
    assert skipped.status_code == 201, skipped.content
    assert skipped.json()["progress"] == {"done": 0, "total": 0}
    assert _skip(me, pair["token"], "broken").status_code == 200  # the same skip again
    assert _skip(me, pair["token"], "expertise").status_code == 409
    assert _vote(me, pair["token"], "left").status_code == 409
    assert _next(me, study).status_code == 204  # never given back to me

    theirs = _next(other, study).json()
    assert theirs["question"] == pair["question"]
    assert _vote(other, theirs["token"], "left").status_code == 201
    assignment = Assignment.objects.get(token=pair["token"])
    assert (assignment.status, assignment.skip_reason) == ("skipped", "broken")

    home = logged_in(staff_user).get("/staff/").content.decode()
    assert "Offensive or broken content" in home and pair["question"][:20] in home
    summary = logged_in(staff_user).get("/api/staff/summary/").json()
    assert summary["skipped"][0]["reason"] == "broken"
    assert summary["studies"][0]["skips"] == 1


def test_a_voted_pair_cannot_be_skipped(make_study, annotator):
    study = make_study(models=2, questions=1, k=1)
    client = logged_in(annotator)
    token = _next(client, study).json()["token"]
    assert _vote(client, token, "left").status_code == 201
    assert _skip(client, token, "cannot_judge").status_code == 409


# --- gold checks -------------------------------------------------------------------------------


def test_gold_pairs_are_mixed_in_measure_accuracy_and_never_count(
    make_study, annotator, other_annotator
):
    study = make_study(models=2, questions=6, k=1)
    golden = list(Comparison.objects.filter(study=study).order_by("pk")[:2])
    assert gold.comparisons_mark_gold(comparisons=golden, expected="a") == 2
    Study.objects.filter(pk=study.pk).update(gold_rate=0.5)
    gold_ids = {c.pk for c in golden}

    def right_answer(client, data) -> str:
        assignment = Assignment.objects.get(token=data["token"])
        return "left" if assignment.left == "a" else "right"  # a is better: pick its side

    # The first annotator gets the gold pairs right, the second gets them wrong; both vote "a"
    # on everything else (the ordinary pairs leave K = 1 each, so they share them).
    for user, correct in ((annotator, True), (other_annotator, False)):
        client = logged_in(user)
        while (response := _next(client, study)).status_code == 200:
            data = response.json()
            assert list(data) == PAIR_FIELDS  # gold or not, the same fields
            choice = right_answer(client, data)
            is_gold = Assignment.objects.get(token=data["token"]).comparison_id in gold_ids
            if is_gold and not correct:
                choice = "right" if choice == "left" else "left"
            assert _vote(client, data["token"], choice).status_code == 201
    # Gold has no K: both annotators judged both gold pairs.
    assert Vote.objects.filter(comparison_id__in=gold_ids).count() == 4
    counted = results.study_results(study=study, bootstrap=0)
    assert counted.n_votes == 4  # the four ordinary comparisons, K = 1
    assert sum(p.games for p in counted.pairs) == 4
    by_name = {q.username: q for q in counted.quality}
    assert (by_name["annotator"].gold_votes, by_name["annotator"].gold_accuracy) == (2, 1.0)
    assert (by_name["other_annotator"].gold_correct, by_name["other_annotator"].gold_accuracy) == (
        0,
        0.0,
    )


def test_gold_checks_are_made_from_known_bad_answers(make_runs):
    from annotation.studies import study_create

    def answers(model_index: int, position: int) -> str:
        # Model 0 answers question 1 with nothing: a known-bad control.
        return "" if (model_index, position) == (0, 1) else f"回答{model_index}-{position}"

    built = make_runs(models=3, questions=3, answers=answers)
    study = study_create(name="controls", runs=built.runs, votes_per_comparison=1)
    assert gold.gold_from_controls(study=study) == 2  # model 0 v 1 and 0 v 2 on question 1
    made = Comparison.objects.filter(study=study, gold=True)
    bad_run = built.runs[0].pk
    for c in made:
        assert c.gold_expected == ("b" if c.run_a_id == bad_run else "a")
    assert gold.gold_from_controls(study=study) == 0  # already gold


# --- exclusion ---------------------------------------------------------------------------------


def test_excluding_an_annotator_changes_the_results_and_including_them_changes_them_back(
    make_study, annotator, other_annotator, admin_user
):
    study = make_study(models=2, questions=4, k=2)
    _vote_all(logged_in(annotator), study, lambda i: "left")
    _vote_all(logged_in(other_annotator), study, lambda i: "tie_bothbad")
    staff = logged_in(admin_user)
    before = staff.get(f"/api/studies/{study.pk}/results/").json()
    assert before["n_votes"] == 8 and before["pairs"][0]["ties"] == 4

    url = f"/studies/{study.pk}/annotators/{other_annotator.pk}/exclusion/"
    response = staff.post(url, {"exclude": "1"})
    assert response.status_code == 302
    assert AnnotatorExclusion.objects.filter(study=study, annotator=other_annotator).exists()
    left_out = staff.get(f"/api/studies/{study.pk}/results/").json()
    assert left_out["n_votes"] == 4 and left_out["pairs"][0]["ties"] == 0
    rows = {q["username"]: q for q in left_out["annotator_quality"]}
    assert rows["other_annotator"]["excluded"] and rows["other_annotator"]["votes"] == 4
    page = staff.get(f"/studies/{study.pk}/results/").content.decode()
    assert "Excluded: include again" in page
    assert Vote.objects.filter(annotator=other_annotator).count() == 4  # votes are kept

    staff.post(url, {"exclude": "0"})
    back = staff.get(f"/api/studies/{study.pk}/results/").json()
    assert back["n_votes"] == 8 and back["pairs"] == before["pairs"]
    assert back["models"] == before["models"]

    # The API does the same (PUT / DELETE).
    api = f"/api/studies/{study.pk}/annotators/{other_annotator.pk}/exclusion/"
    assert staff.put(api).status_code == 204
    assert staff.get(f"/api/studies/{study.pk}/results/").json()["n_votes"] == 4
    assert staff.delete(api).status_code == 204
    assert staff.get(f"/api/studies/{study.pk}/results/").json()["n_votes"] == 8


def test_an_annotator_cannot_exclude_anyone(make_study, annotator, other_annotator):
    study = make_study(models=2, questions=2, k=1)
    url = f"/studies/{study.pk}/annotators/{other_annotator.pk}/exclusion/"
    response = logged_in(annotator).post(url, {"exclude": "1"})
    assert response.status_code in (302, 403)
    assert not AnnotatorExclusion.objects.exists()


# --- pools and quotas --------------------------------------------------------------------------


def test_a_study_is_open_to_its_pool_only(
    make_study, annotator, other_annotator, django_user_model
):
    pooled = make_study(models=2, questions=2, k=1)
    everyone = make_study(models=2, questions=2, k=1)
    reviewers = Group.objects.create(name="reviewers")
    outsider = django_user_model.objects.create_user("reviewer", password="x")
    outsider.groups.add(reviewers)  # not in the annotators group
    pooled.pool_users.add(annotator)
    pooled.pool_groups.add(reviewers)

    mine = logged_in(annotator).get("/annotate/").content.decode()
    assert f"/annotate/{pooled.pk}/" in mine and f"/annotate/{everyone.pk}/" in mine
    other = logged_in(other_annotator)
    listed = other.get("/annotate/").content.decode()
    assert f"/annotate/{pooled.pk}/" not in listed and f"/annotate/{everyone.pk}/" in listed
    assert other.get(f"/annotate/{pooled.pk}/").status_code == 404
    assert _next(other, pooled).status_code == 404
    token = _next(logged_in(annotator), pooled).json()["token"]
    assert _vote(other, token, "left").status_code == 404

    reviewer = logged_in(outsider)
    assert reviewer.get(f"/annotate/{pooled.pk}/").status_code == 200
    assert _next(reviewer, pooled).status_code == 200
    # The default pool is the annotators group: the reviewer is not in it.
    assert reviewer.get(f"/annotate/{everyone.pk}/").status_code == 404
    assert f"/annotate/{everyone.pk}/" not in reviewer.get("/annotate/").content.decode()


def test_a_quota_stops_an_annotator_and_shows_in_their_progress(make_study, annotator):
    study = make_study(models=3, questions=3, k=2)  # 9 comparisons
    Study.objects.filter(pk=study.pk).update(quota=4)
    client = logged_in(annotator)
    first = _next(client, study).json()
    assert first["progress"] == {"done": 0, "total": 4}
    assert _vote(client, first["token"], "left").status_code == 201
    assert _vote_all(client, study, lambda i: "right") == 3
    assert Vote.objects.filter(annotator=annotator).count() == 4


# --- time on task, labels, counted-from --------------------------------------------------------


def test_median_seconds_and_fast_votes_per_annotator(make_study, annotator):
    study = make_study(models=2, questions=4, k=1)
    _vote_all(logged_in(annotator), study, lambda i: "left")
    seconds = [1.0, 2.0, 30.0, 40.0]
    for vote, value in zip(Vote.objects.order_by("pk"), seconds, strict=True):
        Vote.objects.filter(pk=vote.pk).update(seconds=value)
    Study.objects.filter(pk=study.pk).update(fast_vote_seconds=3.0)
    study.refresh_from_db()
    (row,) = quality.annotator_quality(study=study)
    assert (row.votes, row.median_seconds, row.fast_votes) == (4, 16.0, 2)


def test_display_labels_name_the_models_and_a_pair_is_counted_from_the_chosen_side(
    make_study, annotator, admin_user
):
    study = make_study(models=2, questions=4, k=1)
    first, second = study.built.models
    first.display_label = "line-3.6b (SFT)"
    first.save(update_fields=["display_label"])
    _vote_all(logged_in(annotator), study, lambda i: "tie" if i == 0 else "left")
    found = results.study_results(study=study, bootstrap=0)
    (pair,) = found.pairs
    assert (pair.model_a, pair.model_b) == ("line-3.6b (SFT)", second.name)
    flipped = results.study_results(study=study, bootstrap=0, count_from=[second.name])
    (other,) = flipped.pairs
    assert (other.model_a, other.model_b) == (second.name, "line-3.6b (SFT)")
    assert (other.wins, other.ties, other.losses) == (pair.losses, pair.ties, pair.wins)

    staff = logged_in(admin_user)
    md = staff.get(f"/studies/{study.pk}/results/download/md/?from={second.name}").content
    assert f"| {second.name} v.s. line-3.6b (SFT) |" in md.decode()
    bad = staff.get(f"/studies/{study.pk}/results/?from=nobody")
    assert bad.status_code == 400 and "nobody" in bad.content.decode()


# --- staff home and comparison -----------------------------------------------------------------


def test_staff_land_on_their_home_and_annotators_on_their_studies(
    client, make_study, staff_user, annotator
):
    study = make_study(models=2, questions=2, k=1)
    staff_user.set_password("staff-pass")
    staff_user.save()
    landed = client.post(
        "/accounts/login/", {"username": staff_user.username, "password": "staff-pass"}
    )
    assert landed.status_code == 302
    assert client.get(landed["Location"], follow=True).redirect_chain[-1][0] == "/staff/"
    home = client.get("/staff/").content.decode()
    assert study.name in home and "Votes in the last hour" in home
    japanese = client.get("/staff/", headers={"accept-language": "ja"}).content.decode()
    assert "スタッフホーム" in japanese and "直近1時間の投票" in japanese

    other = logged_in(annotator)
    assert other.get("/", follow=True).redirect_chain[-1][0] == "/annotate/"
    assert other.get("/staff/").status_code == 302  # to the admin login
    assert other.get("/api/staff/summary/").status_code == 403


def test_two_studies_are_compared_on_a_page_and_in_the_api(
    make_runs, annotator, other_annotator, admin_user
):
    from annotation.studies import study_create

    built = make_runs(models=3, questions=4)
    first = study_create(name="humans", runs=built.runs, votes_per_comparison=1, open_now=True)
    second = study_create(name="again", runs=built.runs, votes_per_comparison=1, open_now=True)
    _vote_all(logged_in(annotator), first, lambda i: "left" if i % 3 else "tie")
    _vote_all(logged_in(other_annotator), second, lambda i: "left" if i % 2 else "right")
    staff = logged_in(admin_user)
    page = staff.get(f"/staff/compare/?first={first.pk}&second={second.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Kendall" in html and built.models[0].name in html
    api = staff.get(f"/api/studies/compare/?first={first.pk}&second={second.pk}")
    assert api.status_code == 200
    assert api.json()["first"] == "humans" and len(api.json()["strengths"]) == 3
    assert staff.get("/api/studies/compare/?first=x&second=1").status_code == 400


# --- the catalogue -----------------------------------------------------------------------------


def test_the_results_and_staff_pages_speak_one_language(make_study, annotator, admin_user):
    study = make_study(models=2, questions=2, k=1)
    _vote_all(logged_in(annotator), study, lambda i: "tie_bothbad")
    staff = logged_in(admin_user)
    page = staff.get(f"/studies/{study.pk}/results/", headers={"accept-language": "ja"})
    html = page.content.decode()
    for text in ["勝ち", "引き分け", "負け", "うち「どちらも悪い」", "ゴールド正答率"]:
        assert text in html
    assert ">Win<" not in html and ">Loss<" not in html and "同じくらい" not in html
    english = staff.get(f"/studies/{study.pk}/results/", headers={"accept-language": "en"})
    assert ">Win<" in english.content.decode() and "勝ち" not in english.content.decode()


def test_staff_the_admin_lets_view_nothing_see_an_empty_home(make_study, bare_staff):
    study = make_study(models=2, questions=1, k=1)
    home = logged_in(bare_staff).get("/staff/")
    assert home.status_code == 200
    html = home.content.decode()
    assert study.name not in html and study.built.models[0].name not in html
    assert logged_in(bare_staff).get("/api/staff/summary/").status_code == 403
