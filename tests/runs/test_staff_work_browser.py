"""The staff home and a live run page in headless Chromium: one run of every kind listed, linked
and filtered; a run page whose progress and status change while it stays loaded."""

from __future__ import annotations

import shutil

import pytest
from django.db import connections
from django.utils import timezone

from generation.models import GenerationRun

from .work import one_of_every_kind

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EVERY_KIND = {"generation", "finetune", "judge", "grading", "evolution", "benchmark", "sweep"}


@pytest.fixture
def browser(live_server, monkeypatch):
    # Asks for live_server so that the browser (and its connections) goes first at teardown.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls beside Playwright's loop
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
        connections.close_all()


def _signed_in(browser, live_server, admin_user, path: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # (The admin's pages name no icon: the browser's own favicon.ico request is not the page's.)
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and "favicon.ico" not in msg.location.get("url", "")
            and errors.append(msg.text)
        ),
    )
    page.goto(f"{live_server.url}/accounts/login/?next={path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass")
    page.click("[type=submit]")
    page.wait_for_url(f"{live_server.url}{path}")
    return page, errors


def _kinds(page) -> list[str]:
    return page.eval_on_selector_all(
        "#work-table tr.work-row", "rows => rows.map(r => r.dataset.kind)"
    )


def test_the_staff_home_lists_links_and_filters_one_run_of_every_kind(
    browser, live_server, admin_user
):
    work = one_of_every_kind()
    page, errors = _signed_in(browser, live_server, admin_user, "/staff/")
    kinds = _kinds(page)
    assert set(kinds) == EVERY_KIND and len(kinds) == 7
    assert kinds[0] == "judge"  # the failed run first
    first = page.locator("#work-table tr.work-row").first
    assert first.get_attribute("data-status") == "failed"
    assert "refused the connection" in first.inner_text()
    running = page.locator("tr.work-row[data-kind=generation]").inner_text()
    assert "running 5 min" in running and "3 / 10" in running
    assert page.locator("#sweeps-link a").get_attribute("href") == "/staff/sweeps/"

    page.select_option("#work-kind", "grading")
    page.click("#work-filters button")
    page.wait_for_url("**kind=grading**")
    assert _kinds(page) == ["grading"]
    page.select_option("#work-kind", "")
    page.select_option("#work-status", "running")
    page.click("#work-filters button")
    page.wait_for_url("**status=running**")
    assert sorted(_kinds(page)) == ["generation", "sweep"]

    # Each row opens its page: the sweep's own page, a run's (live) admin page.
    page.click("tr.work-row[data-kind=sweep] td:nth-child(3) a")
    page.wait_for_url(f"{live_server.url}/staff/sweeps/{work.sweep.pk}/")
    page.go_back()
    page.click("tr.work-row[data-kind=generation] td:nth-child(3) a")
    page.wait_for_url(f"**/admin/generation/generationrun/{work.generation.pk}/change/")
    assert page.locator("#run-live").get_attribute("data-active") == "1"

    page.goto(f"{live_server.url}/staff/")
    page.click("#all-work-link")
    page.wait_for_url(f"{live_server.url}/staff/runs/")
    assert set(_kinds(page)) == EVERY_KIND
    assert errors == []


def test_a_run_page_follows_progress_and_status_without_a_reload(browser, live_server, admin_user):
    work = one_of_every_kind()
    run = work.generation
    path = f"/admin/generation/generationrun/{run.pk}/change/"
    page, errors = _signed_in(browser, live_server, admin_user, path)
    assert page.locator(".run-progress-text").inner_text() == "3/10 (30%) answers"
    # A mark the page would lose on any reload or navigation.
    page.evaluate("window.stillTheSamePage = true")

    GenerationRun.objects.filter(pk=run.pk).update(done=7, heartbeat_at=timezone.now())
    # (expect polls through selectors: the page's policy allows no eval for wait_for_function.)
    expect(page.locator(".run-progress-text")).to_have_text("7/10 (70%) answers")
    assert page.eval_on_selector("progress.run-progress", "bar => bar.value") == 7

    GenerationRun.objects.filter(pk=run.pk).update(
        done=10, status="succeeded", finished_at=timezone.now()
    )
    expect(page.locator("#run-live")).to_have_attribute("data-active", "0")
    assert page.locator(".field-status .readonly").inner_text() == "succeeded"
    assert page.locator(".run-progress-text").inner_text() == "10/10 (100%) answers"
    assert "The run has ended" in page.locator("#run-live").inner_text()
    assert page.evaluate("window.stillTheSamePage") is True

    # It has stopped asking: a later change is not shown.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    GenerationRun.objects.filter(pk=run.pk).update(error="changed after the end")
    page.wait_for_timeout(5000)
    assert not [u for u in requests if "/progress/" in u]
    assert errors == []
