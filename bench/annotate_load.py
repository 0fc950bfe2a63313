"""Load test of the annotation loop: the production configuration the README gives, measured.

    .venv/bin/python bench/annotate_load.py [--users 20 100] [--duration 20] [--web-workers 4]
                                            [--think-rate 20] [--kill-worker-at SECONDS]

Builds a fresh database, a study large enough that no annotator runs out, the annotator
accounts, and runs ANALYZE (as autovacuum would within a minute). The database is
``DATABASE_URL``'s server and credentials; it is dropped and recreated, so when its name does not
say ``bench`` the bench uses ``<name>_bench`` beside it (no DATABASE_URL: the local
``evalsite_bench``). Then it starts gunicorn as the README deploys it (``-w 4``, DEBUG=0,
HTTPS-only cookies, HSTS, CSP, the broker's Redis as the shared cache and session store, and
whatever connection settings ``evalsite/settings.py`` gives production; the client sends
``X-Forwarded-Proto: https`` as a TLS proxy would) and prints the settings it runs with.

A load generator in another process (bench/load_client.py) logs every annotator in; for each N
it runs the loop with N annotators and no pause for a fixed time in each protocol (``page``: the
voting page's, one request per vote, the vote with ?next=1&diff=0 answering the next pair
without its word diff, as the page asks while its diff box is unticked; ``two``: next-pair, then
vote, as outside tools may), then calls a trivial JSON view behind the same
session authentication for the same time; then all annotators vote with think time (open loop,
--think-rate votes per second in total, the page's protocol), which is the latency people feel.
The final lines are those of the first protocol (the page's, by default).
Each phase prints throughput, latency percentiles and the CPU milliseconds per request of
the app (the gunicorn tree), PostgreSQL (the bench database's backends) and the load generator.
Last, it checks the database: every vote that got a success response is stored, none twice,
none over K.

The per-user rate limit on next/vote (settings ANNOTATE_RATE, 120/min in production) is raised
for the run through the environment: a load test measures the server, not the throttle.

With --kill-worker-at S it is also the fault drill "kill -9 one gunicorn worker during the load":
clients may see errors, but no acknowledged vote may be lost. Its pass line says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from load_client import PASSWORD, client_entry  # noqa: E402

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/evalsite_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"  # as the README's deployment


# --- orchestration -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _build_study(users: int, questions: int, models: int, k: int) -> int:
    """Prompt set, imported runs with realistic answers, an open study, N annotators."""
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User

    from annotation.studies import study_create
    from generation.importers import ParsedQuestion
    from generation.registry import language_model_register, prompt_set_create
    from generation.runs import generation_run_create_imported

    fixture = _jsonl(REPO / "fixtures/prompts_ja.jsonl")
    corpus = _jsonl(REPO / "fixtures/tiny_corpus_ja.jsonl")

    prompt_set = prompt_set_create(
        name="bench",
        questions=[
            ParsedQuestion(line=i, text=f"{fixture[i % len(fixture)]['text']}（{i}）")
            for i in range(questions)
        ],
    )
    rng = random.Random(0)
    qids = list(prompt_set.questions.values_list("pk", flat=True))
    runs = []
    for m in range(models):
        model = language_model_register(name=f"bench-model-{m}", name_or_path=f"m{m}")
        answers = {
            qid: "\n".join(rng.choice(corpus)["answer"] for _ in range(rng.randint(2, 6)))
            for qid in qids
        }
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=answers)
        )
    study = study_create(name="bench", runs=runs, votes_per_comparison=k, open_now=True)
    group, _ = Group.objects.get_or_create(name="annotators")
    password = make_password(PASSWORD)
    User.objects.bulk_create(
        User(username=f"annotator{i:03d}", password=password) for i in range(users)
    )
    group.user_set.add(*User.objects.filter(username__startswith="annotator"))
    return study.pk


def _check_database(study_id: int, acknowledged: list[str]) -> tuple[int, int, int, int]:
    from django.db.models import Count, F

    from annotation.models import Comparison, Study, Vote

    study = Study.objects.get(pk=study_id)
    stored = set(
        Vote.objects.filter(comparison__study=study).values_list("assignment__token", flat=True)
    )
    lost = len(set(acknowledged) - stored)
    duplicated = (
        Vote.objects.filter(comparison__study=study)
        .values("assignment")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    ) + (
        Vote.objects.filter(comparison__study=study)
        .values("comparison", "annotator")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    over = (
        Comparison.objects.filter(study=study)
        .annotate(n=Count("votes"))
        .filter(n__gt=study.votes_per_comparison)
        .count()
    )
    # Comparison.vote_count, which assignment reads instead of counting, against the votes.
    miscounted = (
        Comparison.objects.filter(study=study)
        .annotate(n=Count("votes"))
        .exclude(vote_count=F("n"))
        .count()
    )
    return lost, duplicated, over, miscounted


def _check_progress(study_id: int) -> int:
    """Annotators whose kept progress (annotation/loop/progress.py) differs from a count."""
    from annotation.loop.progress import progress_counted, progress_of
    from annotation.models import AnnotatorProgress, Study

    study = Study.objects.get(pk=study_id)
    wrong = 0
    for row in AnnotatorProgress.objects.filter(study=study):
        counted = progress_counted(study_id=study_id, annotator_id=row.annotator_id)
        kept = progress_of(
            done=row.done, closed=row.closed, open_pairs=study.open_pairs or 0, quota=study.quota
        )
        stale = row.basis != study.progress_basis or study.open_pairs is None
        wrong += int(stale or kept != counted)
    return wrong


def _start_gunicorn(*, port: int, workers: int, env: dict, options: list[str], **popen):
    """The app under gunicorn on 127.0.0.1:port (the load test and the restart drill)."""
    command = [sys.executable, "-m", "gunicorn", "evalsite.wsgi", "-w", str(workers)]
    command += ["-b", f"127.0.0.1:{port}", *options]
    return subprocess.Popen(command, cwd=REPO, env=env, **popen)


def _wait_for_server(port: int, proc: subprocess.Popen) -> None:
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        try:
            httpx.get(
                f"http://127.0.0.1:{port}/accounts/login/",
                headers={"X-Forwarded-Proto": "https"},
                timeout=2,
            )
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def _gunicorn_workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def bench_database_url(url: str | None) -> str:
    """DATABASE_URL's server and credentials, in a database the bench may drop."""
    if not url:
        return DEFAULT_DATABASE
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" in name:
        return url
    return urlunsplit(parts._replace(path=f"/{name}_bench"))


def _describe_settings(workers: int) -> str:
    """The settings that decide throughput, as the app reads them."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    pool = db.get("OPTIONS", {}).get("pool")
    if pool:
        connections = f"pool {pool}"
    else:
        connections = (
            f"CONN_MAX_AGE={db['CONN_MAX_AGE']}, CONN_HEALTH_CHECKS={db['CONN_HEALTH_CHECKS']}"
        )
    cache = settings.CACHES["default"]
    return "; ".join(
        [
            f"DEBUG={int(settings.DEBUG)}",
            f"gunicorn -w {workers} (sync)",
            f"database connections: {connections}",
            f"sessions: {settings.SESSION_ENGINE}",
            f"cache: {cache['BACKEND']} {cache.get('LOCATION', '')}".strip(),
            f"broker: {settings.CELERY_BROKER_URL}",
        ]
    )


def _percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms"


def _cpu_line(phase: dict, requests: int) -> str:
    cpu = phase["cpu"]
    per = {k: 1000 * v / max(requests, 1) for k, v in cpu.items()}
    cores = {k: v / phase["seconds"] for k, v in cpu.items()}
    ended = ""
    if per["ended"] >= 0.01:
        ended = f" (+{per['ended']:.2f} in connections that ended, any database)"
    return (
        f"CPU ms per request: app {per['app']:.2f}, PostgreSQL {per['postgres']:.2f}{ended}, "
        f"load generator {per['load']:.2f}; cores busy: app {cores['app']:.2f}, PostgreSQL "
        f"{cores['postgres'] + cores['ended']:.2f}, load generator {cores['load']:.2f}"
    )


def _errors(phase: dict) -> str:
    errors: dict[str, int] = {}
    for e in phase["errors"]:
        errors[e] = errors.get(e, 0) + 1
    return str(errors) if errors else "none"


def _per_vote_line(phase: dict) -> str:
    """CPU milliseconds per acknowledged vote, whatever the requests it took."""
    votes = max(len(phase["acknowledged"]), 1)
    cpu = phase["cpu"]
    app, postgres = 1000 * cpu["app"] / votes, 1000 * (cpu["postgres"] + cpu["ended"]) / votes
    load = 1000 * cpu["load"] / votes
    return (
        f"CPU ms per vote: app {app:.2f}, PostgreSQL {postgres:.2f}, load generator {load:.2f} "
        f"(total {app + postgres + load:.2f})"
    )


_PROTOCOL_NAMES = {
    "page": "the page's protocol: one request per vote (vote with ?next=1)",
    "two": "two requests per vote (next-pair, then vote)",
}


def _report(phases: list[dict]) -> tuple[dict[int, float], dict[int, float]]:
    """Print each phase; returns votes per second and the throughput ratio per N, of the first
    protocol run (the page's, by default)."""
    votes: dict[int, float] = {}
    ratios: dict[int, float] = {}
    pings = {p["users"]: p for p in phases if p["phase"] == "ping"}
    for loop in (p for p in phases if p["phase"] == "loop"):
        n, protocol = loop["users"], loop["protocol"]
        ping = pings[n]
        calls = len(loop["next_ms"]) + len(loop["vote_ms"])
        loop_rps = calls / loop["seconds"]
        ping_rps = len(ping["ping_ms"]) / ping["seconds"]
        rate = len(loop["acknowledged"]) / loop["seconds"]
        ratio = loop_rps / ping_rps
        if n not in votes:
            votes[n], ratios[n] = rate, ratio
        print(f"== N={n}: {n} annotators with no pause, {_PROTOCOL_NAMES[protocol]} ==")
        print(
            f"votes acknowledged: {len(loop['acknowledged'])}; annotators who ran out: "
            f"{loop['ran_out']}; client errors: {_errors(loop)}"
        )
        print(f"votes per second ({protocol}): {rate:.1f}")
        print(f"next-pair latency: {_percentiles(loop['next_ms'])} ({len(loop['next_ms'])} calls)")
        print(f"vote latency: {_percentiles(loop['vote_ms'])}")
        print(f"vote loop requests per second: {loop_rps:.1f}")
        print(f"vote loop {_cpu_line(loop, calls)}")
        print(f"vote loop ({protocol}) {_per_vote_line(loop)}")
        print(f"vote loop ({protocol}) / trivial view throughput ratio at N={n}: {ratio:.2f}")
    for n, ping in pings.items():
        print(f"== N={n}: the trivial view ==")
        print(f"trivial view requests per second: {len(ping['ping_ms']) / ping['seconds']:.1f}")
        print(f"trivial view latency: {_percentiles(ping['ping_ms'])}")
        print(f"trivial view {_cpu_line(ping, len(ping['ping_ms']))}")
        if ping["errors"]:
            print(f"trivial view client errors: {_errors(ping)}")
    for think in (p for p in phases if p["phase"] == "think"):
        calls = len(think["next_ms"]) + len(think["vote_ms"])
        print(
            f"== think time: {think['users']} annotators, open loop at {think['rate']:g} votes "
            f"per second, {_PROTOCOL_NAMES[think['protocol']]} =="
        )
        print(
            f"votes per second: {len(think['acknowledged']) / think['seconds']:.1f}; "
            f"client errors: {_errors(think)}"
        )
        print(
            f"next-pair latency: {_percentiles(think['next_ms'])} ({len(think['next_ms'])} calls)"
        )
        print(f"vote latency: {_percentiles(think['vote_ms'])}")
        print(f"think time {_cpu_line(think, calls)}")
        print(f"think time {_per_vote_line(think)}")
        per_vote = think["vote_ms"] if think["protocol"] == "page" else think["next_ms"]
        print(f"think time latency per vote as annotators feel it: {_percentiles(per_vote)}")
    return votes, ratios


def main(args) -> int:
    port = args.port or _free_port()
    database_url = bench_database_url(args.database_url or os.environ.get("DATABASE_URL"))
    # The README's production environment; nothing here tunes the app beyond it.
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "ANNOTATE_RATE": "1000000/min",  # raised for the bench (see the docstring)
        "OPENBLAS_NUM_THREADS": "1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    users = sorted(set(args.users))
    print(
        f"database {database_url}; annotators {' and '.join(map(str, users))}; "
        f"{args.duration:.0f} s per phase"
    )
    _fresh_database(database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True
    )
    study_id = _build_study(max(users), args.questions, args.models, args.k)
    print(f"settings: {_describe_settings(args.web_workers)}")
    # Fresh statistics, as autovacuum would gather within a minute of building the study: with
    # none, the planner takes the study for a few rows and the first minute of the run would
    # measure its mistakes rather than the steady state.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    pairs = args.models * (args.models - 1) // 2
    print(
        f"study: {args.models} models x {args.questions} questions = "
        f"{pairs * args.questions} comparisons, K={args.k}"
    )
    gunicorn = _start_gunicorn(
        port=port,
        workers=args.web_workers,
        env=env,
        options=["--log-level", "warning", "--graceful-timeout", "5"],
    )
    drill = None
    try:
        _wait_for_server(port, gunicorn)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "client.json"
            command = [sys.executable, __file__, "--client", "--port", str(port)]
            command += ["--users", *map(str, users), "--duration", str(args.duration)]
            command += ["--think-rate", str(args.think_rate), "--study", str(study_id)]
            command += ["--server-pid", str(gunicorn.pid), "--out", str(out)]
            command += ["--database-name", urlsplit(database_url).path.lstrip("/")]
            command += ["--protocols", *args.protocols]
            client = subprocess.Popen(command, cwd=REPO, env=env)
            if args.kill_worker_at is not None:
                while not Path(str(out) + ".started").exists():
                    if client.poll() is not None:
                        break
                    time.sleep(0.1)
                time.sleep(args.kill_worker_at)
                victim = _gunicorn_workers(gunicorn.pid)[0]
                os.kill(victim, signal.SIGKILL)
                drill = victim
                print(f"drill: killed gunicorn worker {victim} with SIGKILL during the load")
            if client.wait() != 0:
                raise SystemExit("the load generator failed")
            result = json.loads(out.read_text())
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)

    phases = result["phases"]
    votes, ratios = _report(phases)
    acknowledged = [token for p in phases for token in p["acknowledged"]]
    lost, duplicated, over, miscounted = _check_database(study_id, acknowledged)
    print(f"comparisons whose kept vote count differs from their votes: {miscounted}")
    misprogressed = _check_progress(study_id)
    print(f"annotators whose kept progress differs from a count: {misprogressed}")
    miscounted += misprogressed
    if drill is not None:
        verdict = "PASS" if lost == duplicated == over == miscounted == 0 else "FAIL"
        print(f"drill kill -9 gunicorn worker: {verdict} (acknowledged votes lost: {lost})")
    headline = max(users)
    print(f"votes per second at N={headline}: {votes[headline]:.1f}")
    print(f"lost {lost}, duplicated {duplicated}, over K {over}")
    print(f"vote loop / trivial view throughput ratio: {ratios[headline]:.2f}")
    return 0 if lost == duplicated == over == miscounted == 0 else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--users", type=int, nargs="+", default=[20, 100], help="N for each closed-loop phase"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument(
        "--think-rate",
        type=float,
        default=20.0,
        help="votes per second of the think-time phase, all annotators together (0: no phase)",
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=["page", "two"],
        default=["page", "two"],
        help="the loop's protocols, each a phase per N: page (one request per vote, the voting "
        "page's) and two (next-pair, then vote); the first gives the final lines",
    )
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--k", type=int, default=5, help="votes per comparison")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="a database this bench may drop and recreate (default: from DATABASE_URL)",
    )
    parser.add_argument("--kill-worker-at", type=float, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--database-name", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        client_entry(arguments)
    else:
        sys.exit(main(arguments))
