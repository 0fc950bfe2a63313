"""The leaderboard in headless Chromium: sign in as staff, open it from the staff home, sort by
clicking a header (and again the other way), with nothing blocked by the page's CSP."""

from __future__ import annotations

import shutil

import pytest
from django.db import connections

from tests.judging.factories import MODEL_NAMES

from .test_leaderboard import MC_LL, TUNED, benchmarks, voted_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def browser(live_server, monkeypatch):
    # Asks for live_server so that the browser (and its connections) goes first at teardown.
    sync_api = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls beside Playwright's loop
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
        connections.close_all()


def _order(page) -> list[str]:
    return page.eval_on_selector_all(
        "#leaderboard tbody tr", "rows => rows.map(r => r.dataset.model)"
    )


def test_staff_open_the_leaderboard_and_sort_it_by_clicking_headers(
    browser, live_server, annotator, django_user_model, tmp_path
):
    screenshots = tmp_path
    from django.contrib.auth.models import Permission

    voted_study(annotator)
    benchmarks()
    staff = django_user_model.objects.create_user("reader", password="reader-pass", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_study", "export_study", "view_benchmarkrun"],
            content_type__app_label__in=["annotation", "benchmarks"],
        )
    )
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))

    page.goto(f"{live_server.url}/accounts/login/?next=/staff/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", "reader-pass")
    page.click("[type=submit]")
    page.wait_for_url(f"{live_server.url}/staff/")
    page.click("#leaderboard-link a")
    page.wait_for_url(f"{live_server.url}/staff/leaderboard/")

    names = list(MODEL_NAMES)
    # Lineage order: the tuned model right under its base.
    assert _order(page) == [names[0], TUNED, names[1], names[2]]

    page.click("a[data-sort=human]")
    page.wait_for_url("**sort=human**dir=desc**")
    assert _order(page) == [*names, TUNED]  # best first; no figure: last
    assert page.get_attribute("th[data-column=human]", "aria-sort") == "descending"

    page.click("a[data-sort=human]")
    page.wait_for_url("**dir=asc**")
    assert _order(page) == [*names[::-1], TUNED]  # still last

    page.click(f"a[data-sort='{MC_LL}']")
    page.wait_for_url("**dir=desc**")
    assert _order(page) == [TUNED, names[0], names[1], names[2]]
    # The model with no benchmark result: its strengths, then blank benchmark cells.
    cells = page.locator(f"tr[data-model='{names[2]}'] td.num").all_text_contents()
    assert cells[0].strip() and [c.strip() for c in cells[2:]] == ["", "", ""]
    page.screenshot(path=str(screenshots / "leaderboard.png"), full_page=True)

    assert not errors, errors
    context.close()
