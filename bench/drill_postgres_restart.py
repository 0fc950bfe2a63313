"""Fault drill: restart PostgreSQL under a running app.

    .venv/bin/python bench/drill_postgres_restart.py

Creates a PRIVATE PostgreSQL cluster with initdb on a free port (never the shared server the test
suite uses), migrates it, opens a small study, starts gunicorn with production settings against
it, and drives an annotator through next -> vote while the cluster is stopped and started again.
While the database is down every request must fail cleanly (HTTP 503: JSON on the API, a plain
page elsewhere, never a traceback); after it is back the same gunicorn must serve again without a
restart, and no acknowledged vote may be missing. The last line reads
``drill postgres restart: PASS`` or ``... FAIL (reasons)``.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from annotate_load import (  # noqa: E402
    _build_study,
    _free_port,
    _start_gunicorn,
    _wait_for_server,
)

PASSWORD = "bench-annotator-password"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise SystemExit(f"{name} not found (Debian's postgresql package)")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the Debian package's `postgres` user owns the cluster.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    def __init__(self, root: Path, port: int):
        self.data = root / "data"
        self.port = port
        self.log = root / "postgres.log"
        self.root = root

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-o",
                    f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                    *args,
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.pg_ctl("start")
        subprocess.run(
            [
                _pg_bin("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "evalsite",
            ],
            check=True,
        )


class Annotator:
    def __init__(self, base: str):
        import httpx

        origin = base.replace("http://", "https://")
        self.client = httpx.Client(base_url=base, timeout=30)
        self.headers = {"X-Forwarded-Proto": "https", "Origin": origin, "Referer": origin + "/"}
        self.cookies: dict[str, str] = {}

    def call(self, method: str, path: str, **kwargs):
        from http.cookies import SimpleCookie

        headers = {**self.headers, **kwargs.pop("headers", {})}
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if method != "GET" and "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        response = self.client.request(method, path, headers=headers, **kwargs)
        for raw in response.headers.get_list("set-cookie"):
            jar = SimpleCookie()
            jar.load(raw)
            self.cookies.update({k: m.value for k, m in jar.items()})
        return response

    def login(self) -> None:
        self.call("GET", "/accounts/login/")
        response = self.call(
            "POST",
            "/accounts/login/",
            data={
                "username": "annotator000",
                "password": PASSWORD,
                "csrfmiddlewaretoken": self.cookies.get("csrftoken", ""),
            },
        )
        assert response.status_code == 302, response.status_code

    def vote_once(self, study: int) -> tuple[int, str | None]:
        response = self.call("GET", f"/api/studies/{study}/next/")
        if response.status_code != 200:
            return response.status_code, None
        token = response.json()["token"]
        response = self.call("POST", f"/api/assignments/{token}/vote/", json={"choice": "left"})
        return response.status_code, token if response.status_code in (200, 201) else None


def main() -> int:
    problems: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="pg-drill-"))
    os.chmod(root, 0o755)
    cluster = Cluster(root, _free_port())
    cluster.init()
    url = f"postgres://postgres@127.0.0.1:{cluster.port}/evalsite"
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "LOG_LEVEL": "CRITICAL",
        "DJANGO_SETTINGS_MODULE": "evalsite.settings",
    }
    # The production connection settings (evalsite/settings.py; DB_* variables from the
    # caller's environment, such as DB_POOL_MAX_SIZE to drill the pool) against a database that
    # goes away under kept connections. The drill needs no broker; throttles use memory.
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CACHE_URL", None)
    os.environ.update(env)
    os.environ.pop("CELERY_BROKER_URL", None)
    print(f"private cluster on port {cluster.port} in {root}")
    from django.conf import settings

    db = settings.DATABASES["default"]
    print(
        f"connections: CONN_MAX_AGE={db['CONN_MAX_AGE']}, "
        f"CONN_HEALTH_CHECKS={db['CONN_HEALTH_CHECKS']}, pool={db.get('OPTIONS', {}).get('pool')}"
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        check=True,
        env=env,
    )
    study = _build_study(users=1, questions=20, models=2, k=1)
    gunicorn = _start_gunicorn(
        port=port,
        workers=2,
        env=env,
        options=["--log-level", "critical"],
        # The server logs each 503 with its cause; keep that out of the drill's report.
        stderr=open(root / "gunicorn.log", "wb"),  # noqa: SIM115 - lives as long as gunicorn
    )
    print(f"gunicorn log: {root / 'gunicorn.log'}")
    acknowledged: list[str] = []
    try:
        _wait_for_server(port, gunicorn)
        annotator = Annotator(f"http://127.0.0.1:{port}")
        annotator.login()
        for _ in range(3):
            status, token = annotator.vote_once(study)
            if token:
                acknowledged.append(token)
        print(f"before the restart: {len(acknowledged)} votes acknowledged")

        cluster.pg_ctl("stop", "-m", "fast")
        print("PostgreSQL stopped")
        for path, kind in [
            (f"/api/studies/{study}/next/", "json"),
            ("/annotate/", "page"),
            ("/accounts/login/", "page"),
        ]:
            response = annotator.call("GET", path)
            body = response.text
            print(f"  GET {path} while down: HTTP {response.status_code}")
            if response.status_code != 503:
                problems.append(f"{path} answered {response.status_code}, not 503")
            if "Traceback" in body or "OperationalError" in body:
                problems.append(f"{path} showed a traceback")
            if kind == "json" and "application/json" not in response.headers.get("content-type"):
                problems.append(f"{path} did not answer JSON")

        cluster.pg_ctl("start")
        print("PostgreSQL started again")
        recovered = False
        for _ in range(20):
            status, token = annotator.vote_once(study)
            if token:
                acknowledged.append(token)
                recovered = True
                break
            time.sleep(0.5)
        print(f"  after the restart the same gunicorn serves votes: {recovered}")
        if not recovered:
            problems.append("the app did not recover without a restart")
        if gunicorn.poll() is not None:
            problems.append("gunicorn died")
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)

    from django.db import connections

    from annotation.models import Vote

    connections.close_all()  # this process's connection died with the restart too
    stored = set(Vote.objects.values_list("assignment__token", flat=True))
    lost = len(set(acknowledged) - stored)
    print(f"acknowledged votes: {len(acknowledged)}, lost: {lost}")
    if lost:
        problems.append(f"{lost} acknowledged votes lost")
    connections.close_all()
    cluster.pg_ctl("stop", "-m", "fast")
    if problems:
        print(f"drill postgres restart: FAIL ({'; '.join(problems)}); cluster and log in {root}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    print("drill postgres restart: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
