"""Answer rendering (Markdown, raw HTML off) and the word-level diff (plain functions)."""

from __future__ import annotations

import html
import re

from annotation.markdown import render_answer, word_diff


def _text(marked: str) -> str:
    return html.unescape(re.sub(r"</?(del|ins)>", "", marked))


def test_markdown_renders_structure_and_shows_raw_html_as_text():
    out = render_answer(
        "# 見出し\n\n1. 一\n2. 二\n\n*強調*\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```\n<b>x</b>\n```\n\n<img src=x onerror=alert(1)>\n[link](javascript:alert(1))\n行1\n行2"
    )
    assert "<h1>見出し</h1>" in out and "<ol>" in out and "<em>強調</em>" in out
    assert "<table>" in out and "<td>1</td>" in out
    assert "<pre><code>&lt;b&gt;x&lt;/b&gt;\n</code></pre>" in out
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert 'href="javascript:' not in out
    assert "行1<br />\n行2" in out
    assert render_answer("") == ""


def test_the_diff_marks_only_the_changed_words_and_keeps_every_character():
    left = "最初の行です。\n私は猫が好きです。理由は三つあります。\nfoo bar baz\n"
    right = "最初の行です。\n私は犬が好きです。理由は三つあります。\nfoo qux baz\n<tag>\n"
    old, new = word_diff(left, right)
    assert re.findall(r"<del>(.*?)</del>", old) == ["猫", "bar"]
    assert re.findall(r"<ins>(.*?)</ins>", new, re.DOTALL) == ["犬", "qux", "&lt;tag&gt;\n"]
    assert _text(old) == left and _text(new) == right
    assert "<tag>" not in new


def test_a_long_answer_differing_in_one_word_is_diffed_word_by_word():
    sentences = [f"これは{i}番目の文で、内容は少しずつ違います。" for i in range(400)]
    left = "".join(sentences)  # one long line, 8000 characters
    changed = sentences.copy()
    changed[200] = changed[200].replace("内容", "中身")
    old, new = word_diff(left, "".join(changed))
    assert re.findall(r"<del>(.*?)</del>", old) == ["内容"]
    assert re.findall(r"<ins>(.*?)</ins>", new) == ["中身"]
    assert _text(old) == left
