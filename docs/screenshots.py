"""Screenshots: the voting page with answers rendered from Markdown (desktop 1280x800 and narrow
390x844), the staff home with work of every kind, a run's page following it live and the
comparison of two studies (in Japanese), and the results page of a study with people's and an
LLM judge's votes (in English).

    .venv/bin/python docs/screenshots.py [OUTDIR] [--only NAME ...]

Builds a throw-away SQLite database with a Japanese study (nothing touches var/ or
DATABASE_URL), serves the site on a free local port and drives Debian's chromium with Playwright.
Writes voting-desktop.png, voting-narrow.png, staff-home.png, run-live.png, study-compare.png
and results-judge.png next to this file (or into OUTDIR); ``--only results-judge`` writes that
one, ``--only staff`` the staff home, the live run page and the comparison.

results-judge.png is the demo's study (``manage.py demo_setup --inline`` in the throw-away
database: three tiny models, a tiny judge taught the verdict format and its finished judge run;
a few minutes on a CPU) after simulated annotators have voted (``_people_vote``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

QUESTION = "Pythonでリストから重複を取り除き、元の順番を保つ方法を教えてください。"
ANSWERS = [
    "## 方法\n\n順番を保ったまま重複を取り除くには、**dict.fromkeys** を使うのが簡単です。\n\n"
    "```python\nitems = [3, 1, 3, 2, 1]\nunique = list(dict.fromkeys(items))\n"
    "print(unique)  # [3, 1, 2]\n```\n\n"
    "| 方法 | 順番 | 速さ |\n|---|---|---|\n| dict.fromkeys | 保つ | O(n) |\n"
    "| set | 保たない | O(n) |\n\n"
    "- Python 3.7 以降は辞書が挿入順を保ちます\n"
    "- ハッシュできない要素はループで取り除いてください",
    "set を使うと重複は消えますが、順番は保たれません。順番が大切なら次のように書きます。\n\n"
    "```\nseen = set()\nresult = []\nfor x in items:\n    if x not in seen:\n"
    "        seen.add(x)\n        result.append(x)\n```\n\n"
    "この方法は要素数 n に対して O(n) で動き、大きなリストでも速いです。",
    "sorted(set(items), key=items.index) でも書けますが、index が毎回先頭から探すため"
    "大きなリストでは遅くなります。小さなリストなら一行で読みやすい書き方です。",
]
INSTRUCTIONS = (
    "質問に対する二つの回答を読み、より役に立つ方を選んでください。\n"
    "正確さ・わかりやすさ・日本語の自然さを重視し、長さだけで判断しないでください。"
)


def _setup_django(workdir: Path) -> None:
    os.environ.pop("DATABASE_URL", None)
    os.environ["VAR_DIR"] = str(workdir)
    os.environ["DEBUG"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop shares this thread
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def _make_study() -> int:
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from annotation.studies import study_create
    from generation.importers import ParsedQuestion
    from generation.registry import language_model_register, prompt_set_create
    from generation.runs import generation_run_create_imported

    call_command("migrate", verbosity=0)
    with contextlib.chdir(REPO / "locale"):
        call_command("compilemessages", locale=["ja"], verbosity=0)
    user = User.objects.create_user("annotator", password="annotator-pass")
    user.groups.add(Group.objects.get(name="annotators"))
    User.objects.create_superuser("admin", password="admin-pass")
    prompt_set = prompt_set_create(
        name="screenshots", questions=[ParsedQuestion(line=1, text=QUESTION)]
    )
    question = prompt_set.questions.get()
    runs = []
    for index, text in enumerate(ANSWERS):
        model = language_model_register(
            name=f"demo-model-{index}", name_or_path=f"demo/model-{index}"
        )
        runs.append(
            generation_run_create_imported(
                model=model, prompt_set=prompt_set, answers={question.pk: text}
            )
        )
    study = study_create(
        name="screenshots",
        title="回答の比較（デモ）",
        runs=runs[:2],
        votes_per_comparison=1,
        instructions=INSTRUCTIONS,
        open_now=True,
    )
    _studies_to_compare(runs)
    return study.pk


def _studies_to_compare(runs) -> None:
    """Two closed studies over the same three models, with votes, for the comparison page."""
    from django.contrib.auth.models import Group, User

    from annotation.loop.assign import next_pair
    from annotation.loop.state import loop_state
    from annotation.loop.votes import vote_record
    from annotation.studies import study_close, study_create

    judges = []
    for i in range(6):
        judge = User.objects.create_user(f"judge{i}")
        judge.groups.add(Group.objects.get(name="annotators"))
        judges.append(judge)
    # The first model is best, the third worst, with some noise (and ties) in each study.
    plans = {
        "人手評価 2026-11": ["left", "left", "tie", "right", "left", "tie_bothbad"],
        "人手評価 2026-12": ["left", "tie", "right", "right", "left", "tie", "left"],
    }
    for name, plan in plans.items():
        study = study_create(name=name, runs=runs, votes_per_comparison=6, open_now=True)
        for i, judge in enumerate(judges):
            state = loop_state(study_id=study.pk, annotator=judge)
            while (assignment := next_pair(state=state).assignment) is not None:
                choice = plan[(i + assignment.comparison_id) % len(plan)]
                # Count from model a's side: flip the choice when a is on the right.
                if assignment.left == "b" and choice in ("left", "right"):
                    choice = "right" if choice == "left" else "left"
                vote_record(assignment=assignment, choice=choice)
                state = loop_state(study_id=study.pk, annotator=judge)
        if name.endswith("11"):
            study_close(study=study)  # one closed, one still open (the staff home lists it)


def _work_of_every_kind() -> int:
    """Rows of every kind of work in the states a staff home shows (nothing runs them): a
    generation run under way, a failed judge run, a grading run, a fine-tune, an Evol-Instruct
    run, a queued benchmark run and a sweep; the id of the generation run under way."""
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from annotation.models import Study
    from benchmarks.models import BenchmarkRun
    from evolution.models import EvolutionRun
    from generation.models import FineTuneRun, GenerationRun, InstructionDataset, LanguageModel
    from judging.models import JudgeRun
    from judging.prompts import judge_prompt_for
    from sweeps.models import Sweep

    now = timezone.now()
    admin = User.objects.get(username="admin")
    model = LanguageModel.objects.get(name="demo-model-0")
    study = Study.objects.get(name="screenshots")
    judge = LanguageModel.objects.create(name="demo-judge", name_or_path="demo/judge")
    data = InstructionDataset.objects.create(name="指示データ-2026-12")
    common = {"created_by": admin}
    running = GenerationRun.objects.create(
        model=model,
        prompt_set=study.prompt_set,
        status="running",
        done=37,
        total=80,
        started_at=now - timedelta(minutes=6),
        heartbeat_at=now,
        **common,
    )
    JudgeRun.objects.create(
        judge=judge,
        study=study,
        prompt=judge_prompt_for(grading=False),
        status="failed",
        error="the judge's endpoint refused the connection (http://gpu-2:8000/v1)",
        done=14,
        total=40,
        started_at=now - timedelta(minutes=42),
        finished_at=now - timedelta(minutes=35),
        **common,
    )
    JudgeRun.objects.create(
        judge=judge,
        study=study,
        prompt=judge_prompt_for(grading=True),
        status="succeeded",
        done=20,
        total=20,
        started_at=now - timedelta(hours=3, minutes=20),
        finished_at=now - timedelta(hours=3, minutes=2),
        **common,
    )
    FineTuneRun.objects.create(
        base_model=model,
        model_name="demo-model-0-lora",
        status="running",
        step=120,
        total_steps=300,
        started_at=now - timedelta(minutes=18),
        heartbeat_at=now,
        **common,
    )
    EvolutionRun.objects.create(
        source=data,
        model=model,
        answer_model=model,
        name="指示データ-evolved",
        status="succeeded",
        done=64,
        total=64,
        started_at=now - timedelta(hours=26),
        finished_at=now - timedelta(hours=25, minutes=10),
        **common,
    )
    BenchmarkRun.objects.create(model=model, tasks=["jcommonsenseqa", "jnli"], total=2, **common)
    Sweep.objects.create(
        name="lr-rows-2026-12", base_model=model, prompt_set=study.prompt_set, judge=judge
    )
    return running.pk


def _serve() -> str:
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    server.set_app(StaticFilesHandler(get_wsgi_application()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def _people_vote(study_id: int, *, annotators: int = 6, votes_each: int = 50) -> None:
    """Simulated annotators vote on the demo study through the loop's own services.

    Each prefers, seven times in ten, the answer that uses more of the question's characters
    (the rule the demo judge was taught, judging.teaching.preferred) and otherwise picks at
    random (seeded), so people and judge agree in part, as they do in practice.
    """
    from django.contrib.auth.models import Group, User

    from annotation.loop.assign import next_pair
    from annotation.loop.state import loop_state
    from annotation.loop.votes import vote_record
    from annotation.models import Comparison
    from judging.engine.verdicts import FIRST, SECOND
    from judging.teaching import preferred

    rng = random.Random(13)
    for i in range(annotators):
        person = User.objects.create_user(f"rater{i}")
        person.groups.add(Group.objects.get(name="annotators"))
        for _ in range(votes_each):
            assignment = next_pair(state=loop_state(study_id=study_id, annotator=person)).assignment
            if assignment is None:
                break
            c = Comparison.objects.select_related("question", "answer_a", "answer_b").get(
                pk=assignment.comparison_id
            )
            left, right = (
                (c.answer_a, c.answer_b) if assignment.left == "a" else (c.answer_b, c.answer_a)
            )
            if rng.random() < 0.7:
                said = preferred(c.question.text, left.text, right.text)
                choice = {FIRST: "left", SECOND: "right"}.get(said, "tie")
            else:
                choice = rng.choice(["left", "right", "tie", "tie_bothbad"])
            vote_record(assignment=assignment, choice=choice)


def _judged_study() -> int:
    """The demo's study, judged by its tiny judge, with people's votes; its id. Made after
    the other screenshots, which it would change (the staff home would list it)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from annotation.management.commands import demo_setup
    from annotation.models import Study

    call_command("demo_setup", inline=True, stdout=io.StringIO())
    admin = User.objects.get(username="admin")  # demo_setup gave it a new random password
    admin.set_password("admin-pass")
    admin.save(update_fields=["password"])
    study = Study.objects.get(name=demo_setup.STUDY)
    _people_vote(study.pk)
    return study.pk


def _results_judge(browser, url: str, outdir: Path, study_id: int) -> None:
    """The results page: the options, people's win / tie / loss and strengths, the judge
    against people and the judge's runs (the page's other cards hidden for the picture)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        # In English, as the README it illustrates (the judge's sections are not translated yet).
        locale="en-US",
        extra_http_headers={"Accept-Language": "en"},
        device_scale_factor=1,
    )
    page = context.new_page()
    page.goto(f"{url}/accounts/login/?next=/studies/{study_id}/results/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass")
    page.click("button[type=submit]")
    page.wait_for_selector("#judge-agreement")
    # The strength chart is an image: the page is only as tall as it will be once it is in.
    page.wait_for_load_state("networkidle")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    page.evaluate("document.fonts.ready")
    # People's pairs and strengths, then the judge's sections: the other cards are hidden.
    bottom = page.evaluate(
        """() => {
            const cards = [...document.querySelectorAll('main section.card')];
            const pairs = cards.find(c => !c.id && c.innerText.includes('v.s.'));
            const shown = new Set([pairs, ...['ranking', 'judge-agreement', 'llm-judge']
                .map(id => document.getElementById(id))]);
            for (const card of cards) if (!shown.has(card)) card.style.display = 'none';
            const box = document.getElementById('llm-judge').getBoundingClientRect();
            return box.bottom + window.scrollY + 16;
        }"""
    )
    page.screenshot(
        path=str(outdir / "results-judge.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": bottom},
    )
    print(f"wrote {outdir / 'results-judge.png'}")
    context.close()


def main(outdir: Path, only: set[str] | None = None) -> None:
    from playwright.sync_api import expect, sync_playwright

    wanted = only or {"voting", "staff", "results-judge"}
    with tempfile.TemporaryDirectory() as workdir:
        _setup_django(Path(workdir))
        study_id = _make_study()
        url = _serve()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
            )
            if "staff" in wanted:
                _staff_pages(browser, url, outdir, _work_of_every_kind())
            voting_pages = [
                ("voting-desktop.png", {"width": 1280, "height": 800}),
                ("voting-narrow.png", {"width": 390, "height": 844}),
            ]
            for name, viewport in voting_pages if "voting" in wanted else []:
                context = browser.new_context(
                    viewport=viewport,
                    locale="ja-JP",
                    extra_http_headers={"Accept-Language": "ja"},
                    device_scale_factor=1,
                )
                page = context.new_page()
                page.goto(f"{url}/accounts/login/?next=/annotate/{study_id}/")
                page.fill("#id_username", "annotator")
                page.fill("#id_password", "annotator-pass")
                page.click("button[type=submit]")
                page.wait_for_selector("#voting[data-state=ready]")
                # The one pair (a reload gives it again): the first answer has a heading,
                # code, a table and a list.
                expect(page.locator("#pair table")).to_have_count(1)
                page.evaluate("window.scrollTo(0, 0)")
                page.evaluate("document.fonts.ready")
                page.screenshot(path=str(outdir / name))
                print(f"wrote {outdir / name}")
                context.close()
            if "results-judge" in wanted:
                _results_judge(browser, url, outdir, _judged_study())
            browser.close()


def _staff_pages(browser, url: str, outdir: Path, running_id: int) -> None:
    from annotation.models import Study
    from generation.models import GenerationRun

    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        locale="ja-JP",
        extra_http_headers={"Accept-Language": "ja"},
        device_scale_factor=1,
    )
    page = context.new_page()
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/staff/")
    page.evaluate("document.fonts.ready")
    page.screenshot(path=str(outdir / "staff-home.png"), full_page=True)
    print(f"wrote {outdir / 'staff-home.png'}")
    # A run's page as it follows the run: the row moves on while the page stays loaded.
    page.goto(f"{url}/admin/generation/generationrun/{running_id}/change/")
    page.wait_for_selector("#run-live[data-active='1']")
    page.click("#toggle-nav-sidebar")  # the run, not the admin's list of every model
    GenerationRun.objects.filter(pk=running_id).update(done=52)
    page.wait_for_selector("#run-live[data-done='52']")
    page.evaluate("window.scrollTo(0, 0)")
    page.evaluate("document.fonts.ready")
    page.screenshot(path=str(outdir / "run-live.png"))
    print(f"wrote {outdir / 'run-live.png'}")
    first, second = Study.objects.filter(name__startswith="人手評価").order_by("pk")
    page.goto(f"{url}/staff/compare/?first={first.pk}&second={second.pk}")
    page.wait_for_selector("#comparison")
    page.evaluate("document.fonts.ready")
    page.screenshot(path=str(outdir / "study-compare.png"), full_page=True)
    print(f"wrote {outdir / 'study-compare.png'}")
    context.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument(
        "--only", nargs="+", choices=["voting", "staff", "results-judge"], help="these only"
    )
    args = parser.parse_args()
    main(args.outdir.resolve(), set(args.only) if args.only else None)
