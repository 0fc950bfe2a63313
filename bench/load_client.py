"""The load generator of bench/annotate_load.py (run by it in a separate process).

Each annotator is one HTTP client with its own cookies. Two protocols drive the loop: ``page``,
the voting page's own (the first pair from next-pair, then one request per vote: the vote with
``?next=1&diff=0`` answers the next pair, without the word diff the page shows only on
request), and ``two``, what outside tools may still do (next-pair, then the vote). Phases: for
each N, a closed loop with no pause for each protocol, then the trivial view behind the same
session authentication; then an open loop with think time (annotators vote at random moments,
a fixed total rate, as people do) on the page's protocol.
Every phase also records the CPU seconds that the app (the gunicorn tree),
PostgreSQL (the backends of the bench database) and this process spent in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from http.cookies import SimpleCookie
from pathlib import Path

PASSWORD = "bench-annotator-password"
CHOICES = ["left", "left", "right", "right", "tie"]  # about a fifth ties, as people vote
COMMENTS = ["", "", "", "どちらも丁寧ですが、左の方が具体的です。", "right is more accurate"]
CPU_SAMPLE_SECONDS = 0.5


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
        self.pair: str | None = None  # the page's protocol: the token of the pair on screen

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


class CpuMeter:
    """CPU seconds (user + system) of three process groups over a phase.

    Processes are followed by pid, sampled every CPU_SAMPLE_SECONDS: one that starts during the
    phase counts whole, one that ends counts up to its last sample. PostgreSQL backends that
    ended between samples (a connection per request) are counted apart, as ``ended``: the
    postmaster's reaped children, of every database on the server.
    """

    def __init__(self, *, server_pid: int, database: str):
        import psutil

        self.psutil = psutil
        self.server_pid = server_pid
        self.backend_tag = f" {database} "
        self.base: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.postmaster = None

    def _now(self) -> dict[tuple[str, int], float]:
        psutil = self.psutil
        found: dict[tuple[str, int], float] = {}

        def add(group: str, proc) -> None:
            try:
                cpu = proc.cpu_times()
                found[(group, proc.pid)] = cpu.user + cpu.system
            except psutil.Error:
                pass

        try:
            server = psutil.Process(self.server_pid)
            for proc in [server, *server.children(recursive=True)]:
                add("app", proc)
        except psutil.Error:
            pass
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if cmdline.startswith("postgres:") and self.backend_tag in cmdline:
                add("postgres", proc)
                if self.postmaster is None:
                    self.postmaster = proc.parent()
        if self.postmaster is not None:
            # Backends that ended, of every database on the server (their CPU is added to the
            # postmaster's children's times when it reaps them).
            with contextlib.suppress(psutil.Error):
                cpu = self.postmaster.cpu_times()
                found[("ended", self.postmaster.pid)] = cpu.children_user + cpu.children_system
        add("load", psutil.Process(os.getpid()))
        return found

    def sample(self) -> None:
        self.last.update(self._now())

    def start(self) -> None:
        self.base = self._now()
        self.last = dict(self.base)

    def stop(self) -> dict[str, float]:
        self.sample()
        totals = {"app": 0.0, "postgres": 0.0, "ended": 0.0, "load": 0.0}
        for key, seconds in self.last.items():
            totals[key[0]] += seconds - self.base.get(key, 0.0)
        return totals

    async def run(self, until_done: asyncio.Event) -> None:
        while not until_done.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until_done.wait(), CPU_SAMPLE_SECONDS)


def _new_result() -> dict:
    return {"next_ms": [], "vote_ms": [], "ping_ms": [], "acknowledged": [], "errors": []} | {
        "ran_out": 0
    }


async def _one_vote(session: Session, study: int, rng: random.Random, out: dict) -> bool:
    """next-pair then vote; False when nothing is left for this annotator."""
    start = time.perf_counter()
    try:
        response = await session.request("GET", f"/api/studies/{study}/next/")
    except Exception as exc:  # noqa: BLE001 - a killed worker drops connections
        out["errors"].append(f"next: {type(exc).__name__}")
        await asyncio.sleep(0.05)
        return True
    out["next_ms"].append((time.perf_counter() - start) * 1000)
    if response.status_code == 204:
        out["ran_out"] += 1
        return False
    if response.status_code != 200:
        out["errors"].append(f"next: HTTP {response.status_code}")
        return True
    token = response.json()["token"]
    body = {"choice": rng.choice(CHOICES), "comment": rng.choice(COMMENTS)}
    start = time.perf_counter()
    try:
        response = await session.request("POST", f"/api/assignments/{token}/vote/", json=body)
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"vote: {type(exc).__name__}")
        return True
    out["vote_ms"].append((time.perf_counter() - start) * 1000)
    if response.status_code in (200, 201):
        out["acknowledged"].append(token)
    else:
        out["errors"].append(f"vote: HTTP {response.status_code}")
    return True


async def _one_vote_page(session: Session, study: int, rng: random.Random, out: dict) -> bool:
    """The page's protocol: the vote with ``?next=1`` (the first pair, or after an error, from
    next-pair), and ``&diff=0`` as the page asks while its word-diff box is unticked; False
    when nothing is left for this annotator."""
    if session.pair is None:
        start = time.perf_counter()
        try:
            response = await session.request("GET", f"/api/studies/{study}/next/")
        except Exception as exc:  # noqa: BLE001 - a killed worker drops connections
            out["errors"].append(f"next: {type(exc).__name__}")
            await asyncio.sleep(0.05)
            return True
        out["next_ms"].append((time.perf_counter() - start) * 1000)
        if response.status_code == 204:
            out["ran_out"] += 1
            return False
        if response.status_code != 200:
            out["errors"].append(f"next: HTTP {response.status_code}")
            return True
        session.pair = response.json()["token"]
    token = session.pair
    body = {"choice": rng.choice(CHOICES), "comment": rng.choice(COMMENTS)}
    start = time.perf_counter()
    try:
        response = await session.request(
            "POST", f"/api/assignments/{token}/vote/?next=1&diff=0", json=body
        )
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"vote: {type(exc).__name__}")
        session.pair = None  # ask next-pair, as the page does after an error
        return True
    out["vote_ms"].append((time.perf_counter() - start) * 1000)
    if response.status_code in (200, 201):
        out["acknowledged"].append(token)
        following = response.json().get("next")
        session.pair = following["token"] if following else None
        if following is None:
            out["ran_out"] += 1
            return False
    else:
        out["errors"].append(f"vote: HTTP {response.status_code}")
        session.pair = None
    return True


PROTOCOLS = {"page": _one_vote_page, "two": _one_vote}


async def _vote_loop(session: Session, study: int, until: float, out: dict) -> None:
    rng = random.Random(session.username + out["protocol"])
    one_vote = PROTOCOLS[out["protocol"]]
    session.pair = None  # each phase starts from next-pair, as the page does when it opens
    while time.monotonic() < until:
        if not await one_vote(session, study, rng, out):
            return


async def _think_loop(
    session: Session, study: int, until: float, per_user_rate: float, out: dict
) -> None:
    """Open loop: this annotator votes at Poisson moments whatever the latency (a slow answer
    delays their next vote only when it is still running at the next moment)."""
    rng = random.Random("think" + session.username)
    one_vote = PROTOCOLS[out["protocol"]]
    session.pair = None
    moment = time.monotonic() + rng.expovariate(per_user_rate)
    while moment < until:
        await asyncio.sleep(max(0.0, moment - time.monotonic()))
        if not await one_vote(session, study, rng, out):
            return
        moment = max(moment + rng.expovariate(per_user_rate), time.monotonic())


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


async def _measured(meter: CpuMeter, out: dict, work) -> None:
    done = asyncio.Event()
    sampler = asyncio.create_task(meter.run(done))
    meter.start()
    started = time.monotonic()
    await work
    out["seconds"] = time.monotonic() - started
    done.set()
    await sampler
    out["cpu"] = meter.stop()


async def _client_main(args) -> dict:
    base = f"http://127.0.0.1:{args.port}"
    users = max(args.users)
    sessions = [Session(base, f"annotator{i:03d}") for i in range(users)]
    for chunk in range(0, len(sessions), 20):
        await asyncio.gather(*(s.login() for s in sessions[chunk : chunk + 20]))
    meter = CpuMeter(server_pid=args.server_pid, database=args.database_name)
    phases: list[dict] = []
    Path(args.out + ".started").touch()  # the drill counts its delay from here
    for n in args.users:
        group = sessions[:n]
        for protocol in args.protocols:
            loop = {"phase": "loop", "users": n, "protocol": protocol, **_new_result()}
            until = time.monotonic() + args.duration
            work = asyncio.gather(*(_vote_loop(s, args.study, until, loop) for s in group))
            await _measured(meter, loop, work)
            phases.append(loop)
        ping = {"phase": "ping", "users": n, **_new_result()}
        until = time.monotonic() + args.duration
        work = asyncio.gather(*(_trivial_loop(s, until, ping) for s in group))
        await _measured(meter, ping, work)
        phases.append(ping)
    if args.think_rate > 0:
        think = {"phase": "think", "users": users, "rate": args.think_rate, **_new_result()}
        think["protocol"] = args.protocols[0]
        until = time.monotonic() + args.duration
        per_user = args.think_rate / users
        work = asyncio.gather(
            *(_think_loop(s, args.study, until, per_user, think) for s in sessions)
        )
        await _measured(meter, think, work)
        phases.append(think)
    for s in sessions:
        await s.client.aclose()
    return {"phases": phases}


def client_entry(args) -> None:
    result = asyncio.run(_client_main(args))
    Path(args.out).write_text(json.dumps(result))
