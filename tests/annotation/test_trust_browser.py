"""In headless Chromium: answers rendered as Markdown (raw HTML as text), both tie keys, skip,
the word diff, a gold pair that looks like any other, pools, and staff landing on /staff/."""

from __future__ import annotations

import pytest

from annotation import gold
from annotation.models import Assignment, Comparison, Study, Vote

from .conftest import PAIR_FIELDS
from .test_voting_page_browser import _wait_done, browser  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MARKDOWN = (
    "## 手順\n\n- 一つ目\n- 二つ目\n\n| 項目 | 値 |\n|---|---|\n| 速さ | 速い |\n\n"
    "```python\nprint('ok')\n```\n\n<script>window.pwned = true</script>\n"
    "一行目\n二行目 回答{model}-{position}"
)


def _markdown_answers(model_index: int, position: int) -> str:
    return MARKDOWN.format(model=model_index, position=position)


def _login(page, base: str, username: str, password: str, next_url: str = "") -> None:
    page.goto(f"{base}/accounts/login/" + (f"?next={next_url}" if next_url else ""))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def _page(browser, **kwargs):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", **kwargs)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return context, page, errors


def test_answers_render_as_markdown_with_raw_html_as_text_and_a_word_diff(
    browser,  # noqa: F811
    live_server,
    make_study,
    annotator,
):
    study = make_study(models=2, questions=1, k=1, answers=_markdown_answers)
    context, page, errors = _page(browser)
    _login(page, live_server.url, "annotator", "annotator-pass", f"/annotate/{study.pk}/")
    page.wait_for_selector("#voting[data-state=ready]")
    left = page.locator("#answer-left")
    assert left.locator("h2").text_content() == "手順"
    assert left.locator("ul > li").all_text_contents() == ["一つ目", "二つ目"]
    assert left.locator("table th").all_text_contents() == ["項目", "値"]
    assert left.locator("table td").all_text_contents() == ["速さ", "速い"]
    code = left.locator("pre > code")
    assert code.text_content() == "print('ok')\n"
    assert "monospace" in code.evaluate("el => getComputedStyle(el).fontFamily")
    assert left.locator("pre").evaluate("el => getComputedStyle(el).overflowX") == "auto"
    # The tag is text: shown as typed, never run; the model's line breaks are kept.
    assert "<script>window.pwned = true</script>" in left.text_content()
    assert left.locator("script").count() == 0
    assert page.evaluate("window.pwned") is None
    assert left.locator("br").count() >= 2

    # The diff: the two answers differ in one word (回答0 / 回答1).
    assert not page.is_visible("#diff-left")
    page.check("#show-diff")
    assert page.is_visible("#diff-left") and not page.is_visible("#answer-left")
    deleted = page.locator("#diff-left del").all_text_contents()
    inserted = page.locator("#diff-right ins").all_text_contents()
    assert deleted and inserted and set(deleted) != set(inserted)
    assert page.locator("#diff-left script").count() == 0
    page.uncheck("#show-diff")
    assert page.is_visible("#answer-left")
    assert not errors, errors
    context.close()


def test_both_tie_keys_and_skip_work(
    browser,  # noqa: F811
    live_server,
    make_study,
    annotator,
):
    study = make_study(models=3, questions=2, k=1)  # 6 comparisons
    context, page, errors = _page(browser)
    _login(page, live_server.url, "annotator", "annotator-pass", f"/annotate/{study.pk}/")
    page.wait_for_selector("#voting[data-state=ready]")
    hint = page.text_content("#keys-on")
    assert "4 or ↑" in hint and "Both bad" in hint and "Both good" in hint
    page.keyboard.press("2")
    _wait_done(page, 1)
    page.keyboard.press("4")
    _wait_done(page, 2)
    page.keyboard.press("ArrowUp")
    _wait_done(page, 3)
    page.click("button[data-choice=tie_bothbad]")
    _wait_done(page, 4)
    votes = list(Vote.objects.filter(annotator=annotator).order_by("pk"))
    assert [(v.outcome, v.tie_kind) for v in votes] == [("tie", "bothgood")] + [
        ("tie", "bothbad")
    ] * 3

    # Skip: the reason, and the next pair comes; the progress total drops by the skipped one.
    question = page.text_content("#question")
    page.click("details.skip summary")
    page.click("button[data-reason=expertise]")
    page.wait_for_selector("#message:has-text('Skipped')")
    page.wait_for_selector("#voting[data-state=ready]")
    assert page.text_content("#progress-total") == "5"
    skipped = Assignment.objects.get(annotator=annotator, status="skipped")
    assert skipped.skip_reason == "expertise"
    assert skipped.comparison.question.text.strip() in question
    assert not errors, errors
    context.close()


def test_a_gold_pair_looks_like_any_other_in_the_page_and_the_api(
    browser,  # noqa: F811
    live_server,
    make_study,
    annotator,
):
    study = make_study(models=2, questions=2, k=1)
    golden = Comparison.objects.filter(study=study).order_by("pk").first()
    gold.comparisons_mark_gold(comparisons=[golden], expected="a")
    Study.objects.filter(pk=study.pk).update(gold_rate=1.0)  # the gold pair comes first
    context, page, errors = _page(browser)
    payloads = []

    def keep(response):
        if "/next/" in response.url and response.status == 200:
            payloads.append(response.json())
        # The page votes with ?next=1: the next pair comes with the vote (issue 30).
        if "/vote/" in response.url and response.status in (200, 201):
            following = response.json().get("next")
            if following:
                payloads.append(following)

    page.on("response", keep)
    _login(page, live_server.url, "annotator", "annotator-pass", f"/annotate/{study.pk}/")
    page.wait_for_selector("#voting[data-state=ready]")
    first_dom = page.locator("#pair").evaluate(
        "el => Array.from(el.querySelectorAll('*')).map(n => n.tagName + ' ' + "
        "Array.from(n.attributes).map(a => a.name + '=' + a.value).join(' ')).join('\\n')"
    )
    page.keyboard.press("1")
    _wait_done(page, 1)
    second_dom = page.locator("#pair").evaluate(
        "el => Array.from(el.querySelectorAll('*')).map(n => n.tagName + ' ' + "
        "Array.from(n.attributes).map(a => a.name + '=' + a.value).join(' ')).join('\\n')"
    )
    tokens = [p["token"] for p in payloads[:2]]
    shown = [Assignment.objects.get(token=t).comparison_id for t in tokens]
    assert shown[0] == golden.pk and shown[1] != golden.pk
    # Same fields, same structure; the rendered answers are the only difference.
    assert [list(p) for p in payloads[:2]] == [PAIR_FIELDS, PAIR_FIELDS]
    assert first_dom == second_dom
    leases = [Assignment.objects.get(token=t) for t in tokens]
    assert [a.lease_expires_at - a.first_delivered_at for a in leases][0] == (
        leases[1].lease_expires_at - leases[1].first_delivered_at
    )
    assert "gold" not in page.content().lower()
    assert not errors, errors
    context.close()


def test_an_annotator_outside_the_pool_gets_404_and_staff_land_on_their_home(
    browser,  # noqa: F811
    live_server,
    make_study,
    annotator,
    other_annotator,
    staff_user,
):
    study = make_study(models=2, questions=1, k=1)
    study.pool_users.add(other_annotator)
    context, page, _ = _page(browser)
    _login(page, live_server.url, "annotator", "annotator-pass")
    page.wait_for_url(f"{live_server.url}/annotate/")
    assert page.locator(f"a[href='/annotate/{study.pk}/']").count() == 0
    response = page.goto(f"{live_server.url}/annotate/{study.pk}/")
    assert response.status == 404
    api = page.goto(f"{live_server.url}/api/studies/{study.pk}/next/")
    assert api.status == 404
    context.close()

    staff_user.set_password("staff-pass")
    staff_user.save()
    context, page, errors = _page(browser)
    _login(page, live_server.url, staff_user.username, "staff-pass")
    page.wait_for_url(f"{live_server.url}/staff/")
    assert study.name in page.text_content("#studies")
    # The language switch: Japanese for the staff pages too.
    page.click("button[name=language][value=ja]")
    page.wait_for_selector("h1:has-text('スタッフホーム')")
    assert not errors, errors
    context.close()
