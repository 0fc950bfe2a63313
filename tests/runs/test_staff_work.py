"""All work in one list (the staff home, /staff/runs/ and GET /api/staff/runs/): runs of every
registered kind and sweeps, failures first, filtered by kind and status, each kind behind its own
view permission; and the one progress endpoint every run page polls."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from evalsite.runs import listing
from tests.conftest import logged_in

from .work import one_of_every_kind

pytestmark = pytest.mark.django_db

EVERY_KIND = {"generation", "finetune", "judge", "grading", "evolution", "benchmark", "sweep"}


def test_the_list_has_one_row_per_kind_failures_first_then_running_then_queued(admin_user):
    work = one_of_every_kind()
    rows = listing.work_rows(user=admin_user)
    assert {r.kind for r in rows} == EVERY_KIND
    assert [r.status for r in rows[:4]] == ["failed", "running", "running", "queued"]
    assert rows[0].kind == "judge" and "refused the connection" in rows[0].error
    by_kind = {r.kind: r for r in rows}
    assert (
        by_kind["generation"].url == f"/admin/generation/generationrun/{work.generation.pk}/change/"
    )
    assert by_kind["sweep"].url == f"/staff/sweeps/{work.sweep.pk}/"
    assert by_kind["grading"].url == f"/admin/judging/judgerun/{work.grading.pk}/change/"
    assert (
        by_kind["generation"].progress_url == f"/api/runs/generation/{work.generation.pk}/progress/"
    )
    # Queued for as long as it has waited; running since it started; finished: how long it ran.
    assert 290 < by_kind["generation"].phase_seconds() < 3600
    assert by_kind["benchmark"].phase_seconds() == pytest.approx(120, abs=1)


def test_filters_pick_a_kind_a_variant_or_a_status(admin_user):
    work = one_of_every_kind()
    for kind in EVERY_KIND:
        assert [r.kind for r in listing.work_rows(user=admin_user, kind=kind)] == [kind]
    # Grading is a judge run mode: "judge" lists the pairwise run only, "grading" the other.
    assert [r.id for r in listing.work_rows(user=admin_user, kind="judge")] == [work.judge.pk]
    assert [r.id for r in listing.work_rows(user=admin_user, kind="grading")] == [work.grading.pk]
    running = listing.work_rows(user=admin_user, status="running")
    assert {r.kind for r in running} == {"generation", "sweep"}
    assert listing.work_rows(user=admin_user, kind="finetune", status="failed") == []
    with pytest.raises(ValueError, match="unknown kind 'training'; known: generation"):
        listing.work_rows(user=admin_user, kind="training")
    with pytest.raises(ValueError, match="unknown status 'done'"):
        listing.work_rows(user=admin_user, status="done")


def test_the_api_lists_the_same_work_for_staff_each_kind_behind_its_permission(
    admin_user, staff_user, annotator
):
    work = one_of_every_kind()
    everything = logged_in(admin_user).get("/api/staff/runs/").json()
    assert everything["count"] == 7
    assert everything["results"][0]["kind"] == "judge"
    assert everything["results"][0]["status"] == "failed"
    grading = logged_in(admin_user).get("/api/staff/runs/?kind=grading&status=succeeded").json()
    assert [(r["kind"], r["id"], r["progress"]) for r in grading["results"]] == [
        ("grading", work.grading.pk, 1.0)
    ]
    bad = logged_in(admin_user).get("/api/staff/runs/?status=finished")
    assert bad.status_code == 400 and "unknown status 'finished'" in bad.json()["detail"]
    # staff_user may view generation and annotation rows only: no judge, benchmark, sweep rows.
    theirs = logged_in(staff_user).get("/api/staff/runs/").json()["results"]
    assert {r["kind"] for r in theirs} == {"generation", "finetune"}
    assert logged_in(annotator).get("/api/staff/runs/").status_code == 403


def test_the_staff_home_and_the_runs_page_link_every_row_and_say_bad_filters(admin_user):
    work = one_of_every_kind()
    client = logged_in(admin_user)
    home = client.get("/staff/").content.decode()
    for kind in work.rows():
        assert f'data-kind="{kind}"' in home
    assert f'href="/admin/evolution/evolutionrun/{work.evolution.pk}/change/"' in home
    assert 'href="/staff/sweeps/"' in home and 'href="/staff/runs/"' in home
    page = client.get("/staff/runs/?kind=sweep")
    assert page.status_code == 200
    assert page.content.decode().count('class="work-row') == 1
    bad = client.get("/staff/runs/?kind=nonsense")
    assert bad.status_code == 400 and "unknown kind" in bad.content.decode()
    japanese = client.get("/staff/runs/", headers={"accept-language": "ja"}).content.decode()
    assert "すべての作業" in japanese and "失敗" in japanese and "採点" in japanese
    admin_index = client.get("/admin/").content.decode()
    for link in ('href="/staff/"', 'href="/staff/runs/"', 'href="/staff/sweeps/"'):
        assert link in admin_index
    assert 'href="/staff/leaderboard/"' in admin_index


def test_the_progress_endpoint_answers_for_any_kind_with_that_kinds_view_permission(
    admin_user, staff_user
):
    work = one_of_every_kind()
    client = logged_in(admin_user)
    got = client.get(f"/api/runs/generation/{work.generation.pk}/progress/").json()
    assert (got["status"], got["done"], got["total"], got["active"]) == ("running", 3, 10, True)
    assert got["text"] == "3/10 (30%) answers"
    # A kind may say more: a fine-tune's step and epoch, as its admin page does.
    tuned = client.get(f"/api/runs/finetune/{work.finetune.pk}/progress/").json()
    assert tuned["text"] == "step 0/40 (0%), epoch 0.00" and tuned["active"] is True
    judged = client.get(f"/api/runs/judge/{work.judge.pk}/progress/").json()
    assert (judged["kind"], judged["active"]) == ("judge", False)
    assert judged["error"] == "the judge endpoint refused the connection"
    assert client.get(f"/api/runs/grading/{work.grading.pk}/progress/").status_code == 404
    assert client.get("/api/runs/judge/999999/progress/").status_code == 404
    # staff_user views generation runs, not judge runs.
    theirs = logged_in(staff_user)
    assert theirs.get(f"/api/runs/generation/{work.generation.pk}/progress/").status_code == 200
    assert theirs.get(f"/api/runs/judge/{work.judge.pk}/progress/").status_code == 403
    staff_user.user_permissions.remove(Permission.objects.get(codename="view_generationrun"))
    refused = logged_in(staff_user).get(f"/api/runs/generation/{work.generation.pk}/progress/")
    assert refused.status_code == 403


def test_every_run_page_follows_its_run_and_long_child_lists_page_at_fifty(admin_user):
    work = one_of_every_kind()
    client = logged_in(admin_user)
    for kind in ("generation", "finetune", "judge", "evolution", "benchmark"):
        run = getattr(work, kind)
        page = client.get(listing.run_page_url(run)).content.decode()
        active = "1" if run.status in run.ACTIVE else "0"
        assert (
            f'data-progress-url="/api/runs/{kind}/{run.pk}/progress/" data-active="{active}"'
            in page
        ), kind
        assert "runs/live.js" in page
    judge_page = client.get(listing.run_page_url(work.judge)).content.decode()
    assert f'href="/admin/judging/judgment/?run__id__exact={work.judge.pk}"' in judge_page
    from annotation.admin import admin  # the admin site every app registers into

    for label in ("judging.judgment", "generation.answer", "evolution.evolutionitem"):
        model = next(m for m in admin.site._registry if m._meta.label_lower == label)
        assert admin.site._registry[model].list_per_page == 50, label
