"""Load test of the annotation loop under gunicorn with production settings on PostgreSQL.

    .venv/bin/python bench/annotate_load.py [--users 100] [--duration 20] [--web-workers 4]
                                            [--kill-worker-at SECONDS]

Builds a fresh database (``evalsite_bench`` on the local PostgreSQL unless --database-url), a
study large enough that no annotator runs out, N annotator accounts, and runs ANALYZE (as
autovacuum would within a minute); starts gunicorn (DEBUG=0,
HTTPS-only cookies, HSTS, CSP; the client sends ``X-Forwarded-Proto: https`` as a TLS proxy
would); then a load generator in another process logs every user in and, for a fixed time, loops
next-pair -> vote, then for the same time calls a trivial JSON view behind the same session
authentication. It prints throughput and latency of both and their ratio, then checks the
database: every vote that got a success response is stored, none twice, none over K.

The per-user rate limit on next/vote (settings ANNOTATE_RATE, 120/min in production) is raised
for the run through the environment: a load test measures the server, not the throttle.

With --kill-worker-at S it is also the fault drill "kill -9 one gunicorn worker during the load":
clients may see errors, but no acknowledged vote may be lost. Its pass line says so.
"""

from __future__ import annotations

import argparse
import asyncio
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
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSWORD = "bench-annotator-password"
CHOICES = ["left", "left", "right", "right", "tie"]  # about a fifth ties, as people vote
COMMENTS = ["", "", "", "どちらも丁寧ですが、左の方が具体的です。", "right is more accurate"]


# --- load generator (a separate process) -------------------------------------------------------


class Session:
    """One annotator: its own connection and cookies (Secure cookies kept by hand over http)."""

    def __init__(self, base: str, username: str):
        import httpx

        self.base = base
        self.username = username
        self.cookies: dict[str, str] = {}
        origin = base.replace("http://", "https://")
        self.headers = {"X-Forwarded-Proto": "https", "Origin": origin, "Referer": origin + "/"}
        self.client = httpx.AsyncClient(base_url=base, timeout=60.0)

    def _cookie_header(self) -> dict:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def _keep(self, response) -> None:
        for raw in response.headers.get_list("set-cookie"):
            jar = SimpleCookie()
            jar.load(raw)
            for key, morsel in jar.items():
                self.cookies[key] = morsel.value

    async def request(self, method: str, path: str, **kwargs):
        headers = {**self.headers, **self._cookie_header(), **kwargs.pop("headers", {})}
        if method != "GET" and "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        response = await self.client.request(method, path, headers=headers, **kwargs)
        self._keep(response)
        return response

    async def login(self) -> None:
        for attempt in range(5):
            try:
                await self._login()
                return
            except Exception:  # noqa: BLE001 - a worker killed by the drill drops the connection
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5)

    async def _login(self) -> None:
        await self.request("GET", "/accounts/login/")
        response = await self.request(
            "POST",
            "/accounts/login/",
            data={
                "username": self.username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": self.cookies.get("csrftoken", ""),
            },
        )
        if response.status_code != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"login of {self.username} failed: HTTP {response.status_code}")


async def _vote_loop(session: Session, study: int, until: float, out: dict) -> None:
    rng = random.Random(session.username)
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            response = await session.request("GET", f"/api/studies/{study}/next/")
        except Exception as exc:  # noqa: BLE001 - a killed worker drops connections
            out["errors"].append(f"next: {type(exc).__name__}")
            await asyncio.sleep(0.05)
            continue
        out["next_ms"].append((time.perf_counter() - start) * 1000)
        if response.status_code == 204:
            out["ran_out"] += 1
            return
        if response.status_code != 200:
            out["errors"].append(f"next: HTTP {response.status_code}")
            continue
        token = response.json()["token"]
        body = {"choice": rng.choice(CHOICES), "comment": rng.choice(COMMENTS)}
        start = time.perf_counter()
        try:
            response = await session.request("POST", f"/api/assignments/{token}/vote/", json=body)
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"vote: {type(exc).__name__}")
            continue
        out["vote_ms"].append((time.perf_counter() - start) * 1000)
        if response.status_code in (200, 201):
            out["acknowledged"].append(token)
        else:
            out["errors"].append(f"vote: HTTP {response.status_code}")


async def _trivial_loop(session: Session, until: float, out: dict) -> None:
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            response = await session.request("GET", "/api/ping/")
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"ping: {type(exc).__name__}")
            continue
        out["ping_ms"].append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            out["errors"].append(f"ping: HTTP {response.status_code}")


async def _client_main(args) -> dict:
    base = f"http://127.0.0.1:{args.port}"
    sessions = [Session(base, f"annotator{i:03d}") for i in range(args.users)]
    for chunk in range(0, len(sessions), 20):
        await asyncio.gather(*(s.login() for s in sessions[chunk : chunk + 20]))
    out = {"next_ms": [], "vote_ms": [], "ping_ms": [], "acknowledged": [], "errors": []}
    out["ran_out"] = 0
    Path(args.out + ".started").touch()  # the drill counts its delay from here
    started = time.monotonic()
    await asyncio.gather(
        *(_vote_loop(s, args.study, started + args.duration, out) for s in sessions)
    )
    out["vote_seconds"] = time.monotonic() - started
    started = time.monotonic()
    await asyncio.gather(*(_trivial_loop(s, started + args.duration, out) for s in sessions))
    out["ping_seconds"] = time.monotonic() - started
    for s in sessions:
        await s.client.aclose()
    return out


def client_entry(args) -> None:
    result = asyncio.run(_client_main(args))
    Path(args.out).write_text(json.dumps(result))


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


def _percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms"


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


def main(args) -> int:
    port = args.port or _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "ANNOTATE_RATE": "1000000/min",  # raised for the bench (see the docstring)
        "OPENBLAS_NUM_THREADS": "1",
        "DB_CONN_MAX_AGE": "60",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    print(f"database {args.database_url}; {args.users} annotators; {args.duration:.0f} s per phase")
    _fresh_database(args.database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True
    )
    study_id = _build_study(args.users, args.questions, args.models, args.k)
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
            client = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    "--port",
                    str(port),
                    "--users",
                    str(args.users),
                    "--duration",
                    str(args.duration),
                    "--study",
                    str(study_id),
                    "--out",
                    str(out),
                ],
                cwd=REPO,
                env=env,
            )
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

    calls = len(result["next_ms"]) + len(result["vote_ms"])
    loop_rps = calls / result["vote_seconds"]
    ping_rps = len(result["ping_ms"]) / result["ping_seconds"]
    votes_per_second = len(result["acknowledged"]) / result["vote_seconds"]
    lost, duplicated, over, miscounted = _check_database(study_id, result["acknowledged"])
    errors: dict[str, int] = {}
    for e in result["errors"]:
        errors[e] = errors.get(e, 0) + 1
    print(
        f"votes acknowledged: {len(result['acknowledged'])}; annotators who ran out: "
        f"{result['ran_out']}; client errors: {errors or 'none'}"
    )
    print(f"votes per second: {votes_per_second:.1f}")
    print(f"next-pair latency: {_percentiles(result['next_ms'])}")
    print(f"vote latency: {_percentiles(result['vote_ms'])}")
    print(f"vote loop requests per second: {loop_rps:.1f}")
    print(f"trivial view requests per second: {ping_rps:.1f}")
    print(f"trivial view latency: {_percentiles(result['ping_ms'])}")
    print(f"comparisons whose kept vote count differs from their votes: {miscounted}")
    if drill is not None:
        verdict = "PASS" if lost == duplicated == over == miscounted == 0 else "FAIL"
        print(f"drill kill -9 gunicorn worker: {verdict} (acknowledged votes lost: {lost})")
    print(f"vote loop / trivial view throughput ratio: {loop_rps / ping_rps:.2f}")
    print(f"lost {lost}, duplicated {duplicated}, over K {over}")
    return 0 if lost == duplicated == over == miscounted == 0 else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--k", type=int, default=5, help="votes per comparison")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/evalsite_bench",
        help="a database this bench may drop and recreate",
    )
    parser.add_argument("--kill-worker-at", type=float, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        client_entry(arguments)
    else:
        sys.exit(main(arguments))
