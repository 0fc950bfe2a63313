"""Fixtures for annotation tests: compiled translations, studies built through the services."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.throttling import ScopedRateThrottle

from annotation.loop.assign import next_pair
from annotation.loop.state import loop_state
from annotation.studies import study_create
from generation.importers import ParsedQuestion
from generation.models import GenerationRun, LanguageModel, PromptSet
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported

# What GET /api/studies/{id}/next/ returns, in order (the texts, the same rendered from
# Markdown, the answers' word diff, the earlier turns of a multi-turn question, the progress):
# a contract with the page and outside tools.
PAIR_FIELDS = ["token", "question", "left", "right", "question_html", "left_html"]
PAIR_FIELDS += ["right_html", "left_diff", "right_diff", "history", "progress"]
HISTORY_FIELDS = ["question", "left", "right", "question_html", "left_html", "right_html"]

# Names no page would contain by accident, so the blinding tests can look for them anywhere.
MODEL_SPECS = [
    ("zebrafalcon-7b-sft", "acme-zebra/zebrafalcon-7b-sft", "Zebracorp"),
    ("quokkaraven-3b-ppo", "quokka-labs/quokkaraven-3b-ppo", "Quokka Labs"),
    ("marmotheron-1b-lora", "adapters/marmotheron-1b-lora-v2", "Marmotworks"),
    ("ibexplover-2b", "ibex-org/ibexplover-2b", "Ibexplover Inc"),
]


@pytest.fixture(scope="session", autouse=True)
def compiled_messages():
    """The Japanese catalogue, compiled if the .mo is missing or older than the .po."""
    import fcntl

    locale_dir = settings.BASE_DIR / "locale" / "ja" / "LC_MESSAGES"
    po, mo = locale_dir / "django.po", locale_dir / "django.mo"
    # Under xdist every process gets here: one compiles while the others wait for its .mo
    # (the lock is taken on the .po file itself).
    with po.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            # From inside locale/, compilemessages walks no other tree (.venv has locale dirs
            # too) and compiles LOCALE_PATHS only.
            with contextlib.chdir(settings.BASE_DIR / "locale"):
                call_command("compilemessages", locale=["ja"], verbosity=0)
    return mo


@pytest.fixture(autouse=True)
def _throttle(monkeypatch):
    """Loops of hundreds of votes would hit the production rate; tests that need it set it."""
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"annotate": "100000/min"})
    cache.clear()
    yield
    cache.clear()


@dataclass
class Built:
    prompt_set: PromptSet
    models: list[LanguageModel]
    runs: list[GenerationRun]
    texts: dict[tuple[int, int], str] = field(default_factory=dict)  # (run, position) -> text
    # Multi-turn questions: (run, position, turn) -> the reply to that user turn (the last
    # turn's is in ``texts`` too).
    turn_texts: dict[tuple[int, int, int], str] = field(default_factory=dict)


def answer_text(model_index: int, position: int) -> str:
    """A distinct, neutral answer per model and question (no names)."""
    return f"回答{model_index}-{position}です。\n手順:\n1. まず準備します。\n2. 次に実行します。"


def earlier_answer_text(model_index: int, position: int, turn: int) -> str:
    """A reply to an earlier user turn of a multi-turn question (no names)."""
    return f"前半{model_index}-{position}-{turn}: **要点**は三つあります。"


def follow_up_text(position: int, turn: int) -> str:
    return f"続き{position}-{turn}: もっと短くまとめてください。"


@pytest.fixture
def make_runs(db) -> Callable[..., Built]:
    counter = {"n": 0}

    def make(
        *,
        models: int = 3,
        questions: int = 5,
        answers: Callable[[int, int], str] = answer_text,
        question_text: Callable[[int], str] = lambda p: (
            f"質問{p}: 良い睡眠のこつを教えてください。"
        ),
        turns: int = 1,
        earlier: Callable[[int, int, int], str] = earlier_answer_text,
    ) -> Built:
        """``turns`` > 1: every question has that many user turns and every run a reply to
        each (``earlier`` the replies before the last, ``answers`` the last one)."""
        counter["n"] += 1
        prompt_set = prompt_set_create(
            name=f"prompts-{counter['n']}",
            questions=[
                ParsedQuestion(
                    line=p,
                    text=question_text(p),
                    follow_ups=tuple(follow_up_text(p, t) for t in range(2, turns + 1)),
                )
                for p in range(1, questions + 1)
            ],
        )
        built = Built(prompt_set=prompt_set, models=[], runs=[])
        question_ids = list(prompt_set.questions.order_by("position").values_list("pk", flat=True))
        for index, (name, path, maker) in enumerate(MODEL_SPECS[:models]):
            model = LanguageModel.objects.filter(name=name).first() or (
                language_model_register(name=name, name_or_path=path, maker=maker)
            )
            texts = {
                qid: [*(earlier(index, pos, t) for t in range(1, turns)), answers(index, pos)]
                for pos, qid in enumerate(question_ids, start=1)
            }
            run = generation_run_create_imported(model=model, prompt_set=prompt_set, answers=texts)
            built.models.append(model)
            built.runs.append(run)
            for pos, qid in enumerate(question_ids, start=1):
                built.texts[(run.pk, pos)] = texts[qid][-1]
                for turn, text in enumerate(texts[qid], start=1):
                    built.turn_texts[(run.pk, pos, turn)] = text
        return built

    return make


@pytest.fixture
def make_study(make_runs):
    counter = {"n": 0}

    def make(
        *,
        models: int = 3,
        questions: int = 5,
        k: int = 2,
        open_now: bool = True,
        instructions: str = "落ち着いて、より役に立つ回答を選んでください。",
        **kwargs,
    ):
        built = make_runs(models=models, questions=questions, **kwargs)
        counter["n"] += 1
        study = study_create(
            name=f"study-{counter['n']}",
            runs=built.runs,
            votes_per_comparison=k,
            instructions=instructions,
            open_now=open_now,
        )
        study.built = built
        return study

    return make


def take_pair(study, annotator):
    """The annotator's next assignment (None: nothing left) the way the API takes it: the loop
    state read first, outside the transaction, then the claim."""
    return next_pair(state=loop_state(study_id=study.pk, annotator=annotator)).assignment


@pytest.fixture
def next_assignment() -> Callable:
    return take_pair
