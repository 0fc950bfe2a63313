"""In headless Chromium: the word diff is fetched only while the annotator asks for it. With the
box unticked, votes ask for the next pair without it (?diff=0); ticking the box then shows the
diff of the pair on screen, fetched again; with the box ticked, votes ask for it."""

from __future__ import annotations

import pytest

from .test_trust_browser import _login, _markdown_answers, _page
from .test_voting_page_browser import _wait_done, browser  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_diff_is_asked_for_only_while_it_is_shown(
    browser,  # noqa: F811
    live_server,
    make_study,
    annotator,
):
    from playwright.sync_api import expect

    study = make_study(models=2, questions=3, k=1, answers=_markdown_answers)
    context, page, errors = _page(browser)
    asked: list[str] = []
    page.on("request", lambda request: "/api/" in request.url and asked.append(request.url))
    _login(page, live_server.url, "annotator", "annotator-pass", f"/annotate/{study.pk}/")
    page.wait_for_selector("#voting[data-state=ready]")
    page.keyboard.press("1")
    _wait_done(page, 1)
    vote = [url for url in asked if "/vote/" in url]
    assert len(vote) == 1 and vote[0].endswith("?next=1&diff=0")
    # The pair on screen came without its diff: ticking the box fetches it.
    assert page.locator("#diff-left").inner_html() == ""
    before = len(asked)
    page.check("#show-diff")
    expect(page.locator("#diff-left del")).not_to_have_count(0, timeout=15000)
    expect(page.locator("#diff-right ins")).not_to_have_count(0, timeout=15000)
    assert [url.split("?")[0].endswith("/next/") for url in asked[before:]] == [True]
    assert page.is_visible("#diff-left") and not page.is_visible("#answer-left")
    # Ticked: the vote asks for the next pair with its diff, and shows it without a fetch.
    page.click("button.choice[data-choice=right]")  # the box has the focus: no shortcuts
    _wait_done(page, 2)
    vote = [url for url in asked if "/vote/" in url]
    assert vote[-1].endswith("?next=1")
    assert not any("/next/" in url for url in asked[asked.index(vote[-1]) :])
    expect(page.locator("#diff-left del")).not_to_have_count(0)
    page.uncheck("#show-diff")
    assert page.is_visible("#answer-left") and page.locator("#diff-left").inner_html() == ""
    assert not errors, errors
    context.close()
