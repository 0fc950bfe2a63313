"""The review page in headless Chromium: staff move with j / k, accept with a, reject with r,
edit with e, typing and Ctrl+Enter, and the rows in the database change accordingly."""

from __future__ import annotations

import shutil

import pytest
from django.db import connections

from generation.models import InstructionExample
from tests.generation.conftest import instruction_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
Review = InstructionExample.Review


@pytest.fixture
def browser(live_server, monkeypatch):
    # As in tests/annotation/test_voting_page_browser.py: the browser goes before the server.
    sync_api = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
        connections.close_all()


def _current(page) -> str:
    return page.get_attribute("#review .review-row.current", "id")


def _press_and_reload(page, key: str) -> None:
    """Press a key that posts the row's form, and wait for the page the server redirects to."""
    with page.expect_navigation():
        page.keyboard.press(key)
    page.wait_for_selector("#review[data-state=ready]")


def test_staff_review_rows_with_the_keyboard(browser, live_server, staff_user):
    dataset = instruction_dataset(
        "evolved",
        [(f"指示{i}: 富士山の高さは？", f"答え{i}: 3776メートルです。") for i in range(1, 6)],
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A CSP refusal shows as a console error; a missing file as a failed response (the
    # browser's own request for /favicon.ico, which the site does not serve, aside).
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and not msg.text.startswith("Failed to load resource")
            and errors.append(msg.text)
        ),
    )
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and not response.url.endswith("/favicon.ico")
            and errors.append(f"{response.status} {response.url}")
        ),
    )

    review = f"{live_server.url}/admin/generation/instructiondataset/{dataset.pk}/review/"
    page.goto(review)
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-pass")
    with page.expect_navigation():
        page.click("input[type=submit]")
    page.wait_for_selector("#review[data-state=ready]")
    assert _current(page) == "row-1"
    for key in ("j", "j", "k"):
        page.keyboard.press(key)
    assert _current(page) == "row-2"

    _press_and_reload(page, "a")  # row 2 accepted; the next pending row is current
    assert _current(page) == "row-3"
    assert page.text_content("#count-accepted") == "1"
    _press_and_reload(page, "r")  # row 3 rejected
    assert _current(page) == "row-4"

    page.keyboard.press("e")
    box = page.locator("#row-4 textarea[name=instruction]")
    assert box.is_visible()
    assert box.evaluate("el => el === document.activeElement")
    page.keyboard.press("Control+a")  # in the box: selects its text, accepts nothing
    page.keyboard.type("書き直した指示 (a, r, e, j, k は入力の文字)")
    page.locator("#row-4 textarea[name=output]").fill("書き直した答え")
    page.locator("#row-4 textarea[name=output]").focus()
    _press_and_reload(page, "Control+Enter")
    assert _current(page) == "row-5"
    assert page.text_content("#count-edited") == "1"
    assert page.text_content("#count-pending") == "2"

    rows = {e.position: e for e in dataset.examples.all()}
    assert {p: (e.review, e.edited) for p, e in rows.items()} == {
        1: (Review.PENDING, False),
        2: (Review.ACCEPTED, False),
        3: (Review.REJECTED, False),
        4: (Review.ACCEPTED, True),
        5: (Review.PENDING, False),
    }
    assert rows[4].instruction == "書き直した指示 (a, r, e, j, k は入力の文字)"
    assert rows[4].output == "書き直した答え"
    assert rows[2].output == "答え2: 3776メートルです。"
    assert all(rows[p].reviewed_by_id == staff_user.pk for p in (2, 3, 4))
    assert errors == []
    context.close()
