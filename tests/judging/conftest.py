"""Fixtures shared by the judging tests: the shipped judge prompts, small studies of imported
answers, and a canned judge: a real OpenAI-compatible HTTP server, written here, whose replies
each test scripts, so that every verdict a judge run receives is known in advance."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from annotation.studies import study_create
from generation.importers import ParsedQuestion
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported

# The served tiny model (`transformers serve`) and its counting proxy, shared with generation.
from tests.generation.conftest import endpoint_proxy, tiny_server  # noqa: F401

# Questions and answers of the small study; each model's answers are of its own length, so a
# judge that prefers the longer answer is consistent, and its verdicts are known.
QUESTIONS = (
    ("春におすすめの散歩道を教えてください。", "川沿いの桜並木", "花と距離"),
    ("味噌汁をおいしく作るこつは何ですか。", "だしを丁寧に取る", "手順の正しさ"),
    ("雨の日に子どもと楽しめる遊びはありますか。", "折り紙や読み聞かせ", "安全さ"),
    ("朝早く起きるための工夫を知りたいです。", "寝る前に画面を見ない", "続けやすさ"),
)
ANSWERS = {
    "short": "{topic}です。",
    "middle": "{topic}がよいと思います。理由も少し書きます。",
    "long": "{topic}をおすすめします。始めやすく、季節も感じられます。無理なく試してください。",
    "polite": "ご質問ありがとうございます。{topic}はいかがでしょうか。",
}


def shown_answers(prompt: str) -> tuple[str, str]:
    """(answer 1, answer 2) as ja_pairwise (or tiny_pairwise) shows them."""
    found = re.search(r"\[回答1\]\n(.*?)\n+\[回答2\]\n(.*?)\n", prompt, re.S)
    if found is None:
        raise AssertionError(f"no answers in the judge prompt: {prompt[:300]}")
    return found.group(1).strip(), found.group(2).strip()


def longer_wins(prompt: str, nth: int = 0) -> str:
    """A fair judge: the longer answer is better; a short reason, then the verdict line."""
    one, two = shown_answers(prompt)
    digit = "1" if len(one) > len(two) else "2" if len(two) > len(one) else "3"
    return f"回答{digit}の方が詳しく説明しています。\n{digit}"


def study_of(name: str = "judged", models: tuple[str, ...] = ("short", "middle", "long")):
    """A study of imported answers: the given models (answer styles) x the four QUESTIONS."""
    prompt_set = prompt_set_create(
        name=f"{name}-questions",
        questions=[ParsedQuestion(line=i, text=q) for i, (q, _, _) in enumerate(QUESTIONS, 1)],
    )
    questions = list(prompt_set.questions.order_by("position"))
    for question, (_, reference, criteria) in zip(questions, QUESTIONS, strict=True):
        question.reference, question.criteria = reference, criteria
        question.save(update_fields=["reference", "criteria"])
    runs = []
    for style in models:
        model = language_model_register(name=f"{name}-{style}", name_or_path=f"nowhere/{style}")
        answers = {
            q.pk: ANSWERS[style].format(topic=topic)
            for q, (_, topic, _) in zip(questions, QUESTIONS, strict=True)
        }
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=answers)
        )
    return study_create(name=name, runs=runs)


@pytest.fixture(autouse=True)
def _judge_prompt_presets(request):
    """Every database test sees the shipped judge prompts (a transactional test empties the
    tables the migration filled)."""
    wants_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if not wants_db:
        return
    request.getfixturevalue("_django_db_helper")
    from judging.prompts import judge_presets_install

    judge_presets_install()


@dataclass
class Asked:
    """One chat request the canned judge received."""

    prompt: str  # the last user message: the judge prompt
    body: dict


@dataclass
class CannedJudge:
    """A real HTTP server speaking the chat-completions API; ``reply(prompt, nth)`` scripts each
    answer (``nth``: how many times this prompt was asked before). ``fail_after``: requests
    beyond this many get HTTP 400 (the client does not retry a 400), to stop a run part-way."""

    reply: Callable[[str, int], str] = longer_wins
    fail_after: int | None = None
    asked: list[Asked] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                prompt = body["messages"][-1]["content"]
                with judge.lock:
                    nth = sum(a.prompt == prompt for a in judge.asked)
                    judge.asked.append(Asked(prompt, body))
                    refuse = judge.fail_after is not None and len(judge.asked) > judge.fail_after
                if refuse:
                    self._send(400, {"error": {"message": "refused by the test"}})
                    return
                try:
                    text = judge.reply(prompt, nth)
                except Exception as exc:  # noqa: BLE001 - a broken script: say so, don't hang up
                    self._send(400, {"error": {"message": f"canned judge script failed: {exc!r}"}})
                    return
                self._send(
                    200,
                    {
                        "id": f"canned-{len(judge.asked)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "canned-judge",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": len(prompt),
                            "completion_tokens": len(text),
                            "total_tokens": len(prompt) + len(text),
                        },
                    },
                )

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def prompts(self) -> list[str]:
        with self.lock:
            return [a.prompt for a in self.asked]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canned_judge():
    """A canned judge server (longer answer wins unless a test sets ``reply``)."""
    judge = CannedJudge()
    yield judge
    judge.close()


@pytest.fixture
def served_judge(canned_judge):
    """The canned judge registered as a served model, one request at a time."""
    return language_model_register(
        name="canned-judge",
        prompt_format="plain",
        endpoint_url=canned_judge.url,
        endpoint_model="canned-judge",
        endpoint_concurrency=1,
    )


@dataclass(frozen=True)
class TaughtJudgeFiles:
    """The weights of a taught judge under MODEL_STORAGE, and how its teaching went."""

    name_or_path: str  # relative to MODEL_STORAGE
    prompt_format: str
    examples: int
    seconds: float


@pytest.fixture(scope="session")
def taught_judge_files(django_db_setup, django_db_blocker, tiny_model_dir) -> TaughtJudgeFiles:
    """The tiny model taught the tiny_pairwise verdict format on 300 examples of its own corpus,
    once per session (per xdist process), for the tests that use a taught judge without
    asserting on its teaching (tests/judging/test_teaching.py teaches its own).

    Taught through the app's own path (judging/teaching.py) in a transaction rolled back
    afterwards: only the weights under this session's MODEL_STORAGE remain.
    """
    import torch
    from django.db import transaction
    from django.test import override_settings

    from generation.registry import language_model_register, storage_relative
    from generation.templates import template_presets_install
    from judging.prompts import judge_presets_install
    from judging.teaching import corpus_pairs, teach_judge, tiny_pairwise_prompt, verdict_examples

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Teaching runs inline: no heartbeat to beat (and none to see the rolled-back run).
        with (
            django_db_blocker.unblock(),
            override_settings(RUN_HEARTBEAT_INTERVAL=3600),
            transaction.atomic(),
        ):
            template_presets_install()
            judge_presets_install()
            # The tiny model as register_tiny registers it, under a name of its own.
            base = language_model_register(
                name="taught-judge-base",
                name_or_path=storage_relative(tiny_model_dir),
                generation_defaults={"max_new_tokens": 48},
            )
            examples = verdict_examples(tiny_pairwise_prompt(), corpus_pairs(seed=0), 300, seed=0)
            taught = teach_judge(base=base, name="tiny-judge", examples=examples)
            files = TaughtJudgeFiles(
                name_or_path=taught.model.name_or_path,
                prompt_format=taught.model.prompt_format,
                examples=taught.examples,
                seconds=taught.seconds,
            )
            transaction.set_rollback(True)
    finally:
        torch.set_num_threads(threads)
    return files


@pytest.fixture
def taught_judge(taught_judge_files, capsys):
    """The session's taught tiny judge registered as "tiny-judge" (greedy, as teach_judge
    leaves it)."""
    from generation.registry import language_model_register
    from judging.teaching import JUDGE_DEFAULTS

    with capsys.disabled():
        print(
            f"\nthe session's tiny judge was taught in {taught_judge_files.seconds:.1f} s "
            f"on {taught_judge_files.examples} examples"
        )
    return language_model_register(
        name="tiny-judge",
        name_or_path=taught_judge_files.name_or_path,
        prompt_format=taught_judge_files.prompt_format,
        generation_defaults=JUDGE_DEFAULTS,
    )
