"""In Chromium: the results page in Japanese leaves no English sentence, and the voting page
says when an answer is empty and why the total drops after a skip.

"No English sentence" is checked on the rendered text: once the study's model names are taken
out, no visible text node may hold three or more ASCII words (two letters or more each) in a
row, separated by spaces only. Figures, model names, method names such as "Bradley-Terry" and
file formats pass; a sentence or a phrase the catalogue missed does not.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from generation.models import Question
from tests.annotation.test_voting_page_browser import browser  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ENGLISH_RUN = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]{2,}){2,}")
# Every visible text node of the page, with the text of <option>s (shown when opened).
TEXT_NODES = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const parent = node.parentElement;
    if (!parent || ["SCRIPT", "STYLE", "TEMPLATE"].includes(parent.tagName)) continue;
    if (parent.closest("[hidden]")) continue;
    const text = node.textContent.replace(/\\s+/g, " ").trim();
    if (text) out.push(text);
  }
  for (const img of document.querySelectorAll("img[alt]")) out.push(img.alt);
  return out;
}"""


def _login(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _vote_all(client, user, study, choose) -> None:
    client.force_login(user)
    n = 0
    while (pair := client.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
        token = pair.json()["token"]
        client.post(
            f"/api/assignments/{token}/vote/",
            {"choice": choose(n)},
            content_type="application/json",
        )
        n += 1


def english_left(texts: list[str], names: list[str]) -> list[str]:
    found = []
    for text in texts:
        for name in sorted(names, key=len, reverse=True):
            text = text.replace(name, " ")
        found += ENGLISH_RUN.findall(text)
    return found


def test_english_runs_are_found_and_names_are_not():
    assert english_left(["強さ: zebrafalcon 7b sft 1020"], ["zebrafalcon 7b sft"]) == []
    assert english_left(["表 No votes yet."], []) == ["No votes yet"]
    assert english_left(["Bradley-Terry (引き分け = ½ 勝)", "csv", "W / T / L"], []) == []


def test_the_results_page_in_japanese_has_no_english_left(
    browser,  # noqa: F811
    live_server,
    client,
    make_study,
    annotator,
    other_annotator,
    staff_user,
):
    study = make_study(models=3, questions=4, k=2)
    for i, question in enumerate(Question.objects.filter(prompt_set=study.prompt_set)):
        Question.objects.filter(pk=question.pk).update(category=("作文", "計算")[i % 2])
    _vote_all(client, annotator, study, lambda i: ("left", "tie", "right")[i % 3])
    _vote_all(client, other_annotator, study, lambda i: ("right", "left")[i % 2])
    names = [m.name for m in study.built.models] + [str(u) for u in (annotator, other_annotator)]
    names += [f"annotator {pk}" for pk in get_user_model().objects.values_list("pk", flat=True)]
    names += [study.name, study.prompt_set.name]

    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    page = context.new_page()
    _login(page, live_server.url, staff_user.username, "staff-pass")
    # The first load makes every fit (bootstrap included): wait as long as that takes.
    page.goto(f"{live_server.url}/studies/{study.pk}/results/?style=1", timeout=600_000)
    page.wait_for_selector("#ranking")
    assert page.locator("html").get_attribute("lang") == "ja"
    texts = page.evaluate(TEXT_NODES)
    assert any("モデル" in t for t in texts)
    left = english_left(texts, names)
    assert left == [], " | ".join(left)
    context.close()


def test_an_empty_answer_and_a_skip_are_explained_on_the_voting_page(
    browser,  # noqa: F811
    live_server,
    make_study,
    annotator,
):
    study = make_study(models=2, questions=3, k=1, answers=lambda m, p: "" if m == 0 else "回答")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="ja-JP")
    page = context.new_page()
    _login(page, live_server.url, "annotator", "annotator-pass")
    page.goto(f"{live_server.url}/annotate/{study.pk}/")
    page.wait_for_selector("#voting[data-state=ready]")
    sides = [page.text_content(s).strip() for s in ("#answer-left", "#answer-right")]
    assert "（空の回答）" in sides and "回答" in sides
    assert page.text_content("#progress-total") == "3"
    assert page.locator("#progress-skipped").is_hidden()

    page.click("details.skip summary")
    page.click("button.skip-reason[data-reason=cannot_judge]")
    page.wait_for_selector("#voting[data-state=ready]")
    assert page.text_content("#progress-total") == "2"
    assert page.text_content("#progress-skipped") == "（スキップ 1 件）".replace("（", "(").replace(
        "）", ")"
    )
    # A reload keeps the explanation (the server counts the skips).
    page.reload()
    page.wait_for_selector("#voting[data-state=ready]")
    assert page.locator("#progress-skipped").is_visible()
    assert "スキップ 1 件" in page.text_content("#progress-skipped")
    context.close()
