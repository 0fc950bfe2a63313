"""Training rows that are also evaluation questions (plain Python, no Django).

A model tuned on the questions it is then judged on looks better than it is. Texts are compared
after normalisation (Unicode NFKC, case folded, every run of whitespace one space, trimmed):
equal normalised texts are *exact* overlaps; otherwise a pair whose character n-gram sets
(``N`` = 3) have a Jaccard similarity of at least ``NEAR`` is a *near-duplicate* (a question
reworded by a word or two, punctuation changed). Evaluation sets are small (tens to thousands of
questions), training sets large: the evaluation side is indexed by n-gram and each training row
is looked up once, so the cost grows with the training rows, not with their product.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

N = 3
NEAR = 0.8
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text or "").casefold()).strip()


def ngrams(text: str, n: int = N) -> frozenset[str]:
    """Character n-grams of an already normalised text (the text itself when shorter)."""
    if len(text) <= n:
        return frozenset([text]) if text else frozenset()
    return frozenset(text[i : i + n] for i in range(len(text) - n + 1))


@dataclass
class Overlap:
    """Which evaluation questions (by index) the training rows hold, exactly or nearly."""

    exact: set[int] = field(default_factory=set)
    near: dict[int, float] = field(default_factory=dict)  # question -> best Jaccard
    rows: int = 0  # training rows that match some question
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (row, question, jaccard)

    @property
    def questions(self) -> int:
        return len(self.exact | set(self.near))


def find_overlap(
    training: Iterable[str], evaluation: list[str], *, threshold: float = NEAR
) -> Overlap:
    """Compare every training text with the evaluation texts; every matching pair is kept (a
    handful where there is little contamination, the whole story where there is much)."""
    questions = [normalise(q) for q in evaluation]
    by_text: dict[str, list[int]] = defaultdict(list)
    grams = [ngrams(q) for q in questions]
    index: dict[str, list[int]] = defaultdict(list)
    for q, text in enumerate(questions):
        if text:
            by_text[text].append(q)
        for gram in grams[q]:
            index[gram].append(q)
    found = Overlap()
    for row, raw in enumerate(training):
        text = normalise(raw)
        if not text:
            continue
        matched = False
        for q in by_text.get(text, ()):
            found.exact.add(q)
            matched = True
            found.pairs.append((row, q, 1.0))
        own = ngrams(text)
        shared: Counter[int] = Counter()
        for gram in own:
            for q in index.get(gram, ()):
                shared[q] += 1
        for q, common in shared.items():
            if questions[q] == text:
                continue
            jaccard = common / (len(own) + len(grams[q]) - common)
            if jaccard >= threshold:
                found.near[q] = max(found.near.get(q, 0.0), jaccard)
                matched = True
                found.pairs.append((row, q, round(jaccard, 3)))
        found.rows += matched
    for q in found.exact:
        found.near.pop(q, None)
    return found
