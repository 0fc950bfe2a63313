"""Identity flags on real answers: precision and recall of the self-identification finder
(annotation/identity.py) on the team's labelled set.

Run from the repository root:  EXTERNAL_DATA=... .venv/bin/python bench/identity.py

``fixtures/identity_labels.csv`` holds only references and labels (source, model, question id,
label 1 = the answer gives away what it is or who made it, a short note); the answers and
questions are read from the public Rakuda and ELYZA-tasks-100 files under ``EXTERNAL_DATA``.
An answer counts as flagged when the finder reports any span in it, with the terms a study of
these models would have: every model's name and path, its maker and the maker's suggested
aliases (generation/aliases.py), and the default ``IDENTITY_WORDS``. When git can show the
finder as it was before the question-aware rules (commit ``OLD_FINDER``), its figures are printed
beside the new ones.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from annotation import identity  # noqa: E402
from generation.aliases import suggested_maker_aliases  # noqa: E402

LABELS = REPO / "fixtures" / "identity_labels.csv"
RAKUDA = Path("rakuda") / "head_fae1ee7" / "jrank" / "data"
ELYZA = Path("elyza-tasks-100") / "data" / "test" / "elyza100_jp.jsonl"
# The finder before questions and roles were taken into account (main before issue 27).
OLD_FINDER = "e0e4fe4"
# Who made each Rakuda model (by answer file), as a team registering them would say.
MAKERS = {
    "gpt": "OpenAI",
    "claude": "Anthropic",
    "llama2": "Meta",
    "line": "LINE",
    "rinna": "rinna",
    "calm": "CyberAgent",
    "elyza": "ELYZA",
    "stablebeluga": "Stability AI",
    "stablelm": "Stability AI",
    "jslm": "Stability AI",
}
# settings.IDENTITY_WORDS's default (evalsite/settings.py), without importing Django settings.
DEFAULT_WORDS = [
    *("OpenAI", "ChatGPT", "GPT-4", "GPT-3", "Anthropic", "Claude", "Google", "Gemini", "Meta"),
    *("Llama", "LINE", "rinna", "CyberAgent", "ELYZA", "Stability", "StableLM", "Mistral", "Qwen"),
]


@dataclass(frozen=True)
class Labelled:
    source: str
    model: str
    question_id: str
    label: bool
    question: str
    text: str


def _maker(stem: str) -> str:
    for prefix, maker in MAKERS.items():
        if prefix in stem or stem.startswith(prefix):
            return maker
    return ""


def _rakuda(root: Path, version: str) -> tuple[dict, dict, list[tuple[str, str]]]:
    """(question id -> first turn, (model, question id) -> answer, [(file stem, model id)])."""
    base = root / RAKUDA / version
    questions = {}
    for line in (base / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        questions[row["question_id"]] = row.get("text") or row["turns"][0]
    answers, models = {}, []
    for path in sorted((base / "answers").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = row["text"] if "text" in row else row["choices"][0]["turns"][0]
            answers[path.stem, row["question_id"]] = text
        models.append((path.stem, row["model_id"]))
    return questions, answers, models


def labelled_answers(root: Path, labels: Path = LABELS) -> tuple[list[Labelled], list]:
    """The labelled answers read from ``root`` (EXTERNAL_DATA), and the study's identity terms."""
    sources, models = {}, []
    for version in ("rakuda_v1", "rakuda_v2"):
        questions, answers, found = _rakuda(root, version)
        sources[version] = (questions, answers)
        models += found
    tasks = [json.loads(line) for line in (root / ELYZA).read_text(encoding="utf-8").splitlines()]
    sources["elyza-tasks-100"] = (
        {str(n): t["input"] for n, t in enumerate(tasks, 1)},
        {("reference", str(n)): t["output"] for n, t in enumerate(tasks, 1)},
    )
    makers = {_maker(stem) for stem, _ in models} - {""}
    terms = identity.identity_terms(
        names=[n for pair in models for n in pair],
        makers=[*makers, *(a for m in makers for a in suggested_maker_aliases(m))],
        words=DEFAULT_WORDS,
    )
    out = []
    with labels.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            questions, answers = sources[row["source"]]
            out.append(
                Labelled(
                    source=row["source"],
                    model=row["model"],
                    question_id=row["question_id"],
                    label=row["label"] == "1",
                    question=questions[row["question_id"]],
                    text=answers[row["model"], row["question_id"]],
                )
            )
    return out, terms


def score(answers: list[Labelled], flagged: Callable[[Labelled], bool]) -> tuple[float, float]:
    """(precision, recall) of ``flagged`` against the labels (1.0 where nothing was flagged)."""
    hits = [flagged(a) for a in answers]
    true_pos = sum(h and a.label for h, a in zip(hits, answers, strict=True))
    precision = true_pos / sum(hits) if any(hits) else 1.0
    recall = true_pos / sum(a.label for a in answers)
    return precision, recall


def new_finder(terms) -> Callable[[Labelled], bool]:
    return lambda a: bool(identity.find_identity_spans(a.text, terms, question=a.question))


def old_finder(terms) -> Callable[[Labelled], bool] | None:
    """The finder at OLD_FINDER (no question, no roles), or None when git cannot show it."""
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_FINDER}:annotation/identity.py"],
            cwd=REPO,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("old_identity", fh.name)
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_identity"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    os.unlink(fh.name)
    return lambda a: bool(old.find_identity_spans(a.text, terms))


def main() -> None:
    root = Path(os.environ.get("EXTERNAL_DATA", REPO.parent / "shared" / "external-data"))
    answers, terms = labelled_answers(root)
    positives = sum(a.label for a in answers)
    print(f"labelled set: {len(answers)} answers, {positives} self-identifications ({LABELS.name})")
    precision, recall = score(answers, new_finder(terms))
    print(
        f"identity flags: precision {precision:.2f}, recall {recall:.2f} "
        f"on {len(answers)} labelled answers"
    )
    old = old_finder(terms)
    if old is not None:
        precision, recall = score(answers, old)
        print(
            f"old identity flags ({OLD_FINDER}): precision {precision:.2f}, recall {recall:.2f} "
            f"on {len(answers)} labelled answers"
        )


if __name__ == "__main__":
    main()
