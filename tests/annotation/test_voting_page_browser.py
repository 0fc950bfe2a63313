"""The voting page in headless Chromium: log in, vote with the keyboard, watch the progress bar."""

from __future__ import annotations

import shutil

import pytest
from django.db import connections

from annotation.models import Vote

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _answers(model_index: int, position: int) -> str:
    return (
        f"<script>window.pwned = true</script><b>太字ではない</b> 回答{model_index}-{position}\n"
        "手順:\n```\ndef f():\n    return 1\n```\n以上です。"
    )


@pytest.fixture
def browser(live_server, monkeypatch):
    # Asks for live_server so that the browser (and its keep-alive connections, each holding a
    # server thread and its database connection) goes first at teardown.
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test makes
    # (set-up and checks) are ordinary blocking calls, which Django must be told are fine.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
        # Connections the test opened while Playwright's loop ran live in that context;
        # close them here or PostgreSQL refuses to drop the test database at the end.
        connections.close_all()


def _done(page) -> int:
    return int(page.text_content("#progress-done"))


def _wait_done(page, n: int) -> None:
    """The vote is in (progress shows n) and the next pair is on screen (state ready).

    Locator waits, not wait_for_function: the page's CSP forbids eval, which that would need.
    """
    from playwright.sync_api import expect

    expect(page.locator("#progress-done")).to_have_text(str(n), timeout=15000)
    page.wait_for_selector("#voting[data-state=ready]", timeout=15000)


@pytest.mark.quick  # `make test-quick` runs this one of its family
def test_an_annotator_votes_three_pairs_with_the_keyboard(
    browser, live_server, make_study, annotator
):
    study = make_study(models=3, questions=2, k=1, answers=_answers)  # 6 comparisons
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The strict Content-Security-Policy must not block anything the page does.
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))

    page.goto(f"{live_server.url}/annotate/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "annotator")
    page.fill("#id_password", "annotator-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/annotate/")
    page.click(f"a[href='/annotate/{study.pk}/']")
    page.wait_for_selector("#voting[data-state=ready]")
    assert _done(page) == 0 and page.text_content("#progress-total") == "6"
    assert page.eval_on_selector("#progress-bar", "el => el.value") == 0

    # Raw HTML in an answer shows as typed, nothing runs, code blocks stay blocks.
    left = page.text_content("#answer-left")
    assert "<script>window.pwned = true</script><b>太字ではない</b>" in left
    assert page.evaluate("window.pwned") is None
    assert page.locator("#answer-left script, #answer-left b").count() == 0
    assert page.locator("#answer-left pre code").text_content() == "def f():\n    return 1\n"
    boxes = [page.locator(s).bounding_box() for s in ("#answer-left", "#answer-right")]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # side by side

    seen_tokens = set()

    def current_pair():
        return tuple(page.text_content(s) for s in ("#question", "#answer-left", "#answer-right"))

    first = current_pair()
    page.keyboard.press("1")
    _wait_done(page, 1)
    assert page.eval_on_selector("#progress-bar", "el => el.value") == 1
    seen_tokens.add(first)

    # Typing a comment does not vote: shortcuts are off while the box has focus.
    page.click("#comment")
    assert page.is_visible("#keys-off") and not page.is_visible("#keys-on")
    page.keyboard.type("3 は冗長")
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(300)
    assert _done(page) == 1
    page.click("h1")  # leave the box
    assert page.is_visible("#keys-on")
    second = current_pair()
    page.keyboard.press("ArrowRight")
    _wait_done(page, 2)
    seen_tokens.add(second)

    third = current_pair()
    page.keyboard.press("ArrowDown")
    _wait_done(page, 3)
    seen_tokens.add(third)
    assert page.eval_on_selector("#progress-bar", "el => el.value") == 3
    assert page.text_content("#progress-total") == "6"
    assert len(seen_tokens) == 3
    assert page.input_value("#comment") == ""

    votes = list(Vote.objects.filter(annotator=annotator).order_by("created_at"))
    assert [v.shown for v in votes] == ["left", "right", "tie"]
    assert votes[1].comment == "3 は冗長"
    assert all(v.seconds is not None and v.seconds >= 0 for v in votes)
    assert not errors, errors
    context.close()


def test_the_page_stacks_answers_on_a_narrow_screen_and_finishes_with_a_message(
    browser, live_server, make_study, annotator
):
    study = make_study(models=2, questions=2, k=1)
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        locale="ja-JP",
        extra_http_headers={"Accept-Language": "ja"},
    )
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/?next=/annotate/{study.pk}/")
    page.fill("#id_username", "annotator")
    page.fill("#id_password", "annotator-pass")
    page.click("button[type=submit]")
    page.wait_for_selector("#voting[data-state=ready]")
    assert "A の方が良い" in page.text_content("button[data-choice=left]")
    boxes = [page.locator(s).bounding_box() for s in ("#answer-left", "#answer-right")]
    assert boxes[1]["y"] > boxes[0]["y"] + boxes[0]["height"] - 1  # stacked
    page.click("button[data-choice=left]")
    _wait_done(page, 1)
    page.click("button[data-choice=right]")
    page.wait_for_selector("#voting[data-state=done]")
    assert "この評価であなたに割り当てられる組はもうありません。" in page.text_content("#done")
    assert page.text_content("#progress-done") == "2"
    assert Vote.objects.filter(annotator=annotator).count() == 2
    context.close()


def test_a_two_turn_pair_shows_each_sides_whole_conversation(
    browser, live_server, make_study, annotator
):
    study = make_study(models=2, questions=2, turns=2, k=1)
    built = study.built
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(f"{live_server.url}/accounts/login/?next=/annotate/{study.pk}/")
    page.fill("#id_username", "annotator")
    page.fill("#id_password", "annotator-pass")
    page.click("button[type=submit]")
    page.wait_for_selector("#voting[data-state=ready]")

    for n in (1, 2):
        # The shared first user turn with each side's own first reply, then the last turn.
        exchange = page.locator("#history .exchange")
        assert exchange.count() == 1
        assert page.is_visible("#conversation-note") and page.is_visible("#question-multi")
        assert page.text_content("#question-turn") == "2"
        left_run, position = _side(page, "left", built)
        right_run, _ = _side(page, "right", built)
        assert left_run != right_run
        question = built.prompt_set.questions.get(position=position)
        assert exchange.locator(".exchange-question").inner_text().strip() == question.turns[0]
        assert page.inner_text("#question").strip() == question.turns[1]
        for side, run in (("left", left_run), ("right", right_run)):
            shown = exchange.locator(f".exchange-{side}")
            assert shown.locator("strong").inner_text() == "要点"  # Markdown, rendered
            expected = built.turn_texts[(run, position, 1)].replace("**", "")
            assert shown.inner_text().strip() == expected
        html = page.content()  # the page as rendered, both turns in: no model named
        for model in built.models:
            assert model.name not in html and model.maker not in html
            assert model.name_or_path not in html
        # The conversation reads top to bottom: the earlier turn above the last one.
        assert exchange.bounding_box()["y"] < page.locator("#question").bounding_box()["y"]
        replies = exchange.locator(".answer")
        boxes = [replies.nth(i).bounding_box() for i in (0, 1)]
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # side by side
        page.set_viewport_size({"width": 390, "height": 844})
        boxes = [replies.nth(i).bounding_box() for i in (0, 1)]
        assert boxes[1]["y"] > boxes[0]["y"] + boxes[0]["height"] - 1  # stacked on a phone
        page.set_viewport_size({"width": 1280, "height": 800})
        page.keyboard.press("1")
        if n == 1:
            _wait_done(page, 1)
    page.wait_for_selector("#voting[data-state=done]")
    assert Vote.objects.filter(annotator=annotator).count() == 2
    assert not errors, errors
    context.close()


def _side(page, side: str, built) -> tuple[int, int]:
    """(run, question position) of the last reply shown on this side."""
    shown = page.locator(f"#answer-{side}").inner_text()
    for (run, position), text in built.texts.items():
        if shown.startswith(text.split("\n")[0]):
            return run, position
    raise AssertionError(f"unknown answer on the {side}: {shown[:80]!r}")
