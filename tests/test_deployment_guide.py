"""docs/deployment.md's deployment steps, run as written and in order, against a scratch
PostgreSQL database and a scratch static folder: the Japanese interface and the static files
must be there at the end, served by gunicorn."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

REPO = Path(settings.BASE_DIR)
GUIDE = REPO / "docs" / "deployment.md"
MARK = "<!-- deployment-steps -->"
VENV = ".venv/bin/"
# What the block must hold, in this order (a step dropped from the guide fails here).
STEPS = ["make install", "migrate", "compilemessages", "collectstatic", "check", "createsuperuser"]


def deployment_steps() -> list[str]:
    """The lines of the ```sh block right after the marker, comments dropped."""
    text = GUIDE.read_text(encoding="utf-8")
    after = text[text.index(MARK) + len(MARK) :]
    block = re.match(r"\s*```sh\n(.*?)```", after, re.S)
    assert block, "the marker is not followed by a sh block"
    lines = [line.split("   #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scratch_database():
    name = f"evalsite_deploy_{uuid.uuid4().hex[:10]}"
    admin_url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + name))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _get(port: int, path: str, **headers) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.postgres
def test_the_deployment_steps_run_in_order_and_serve_japanese_and_static_files(
    scratch_database, tmp_path
):
    steps = deployment_steps()
    found = [next((s for s in STEPS if s in line), None) for line in steps]
    order = [s for s in found if s]
    assert order == STEPS, f"the guide's steps, in order: {steps}"
    po = REPO / "locale" / "ja" / "LC_MESSAGES" / "django.po"
    mo = po.with_suffix(".mo")
    # compilemessages skips a .mo newer than its .po: make the .po newer, so the step must
    # compile it (as after any update of the code).
    os.utime(po)
    started = po.stat().st_mtime
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VAR_DIR": str(tmp_path / "var"),  # the static root is VAR_DIR/static
        "DJANGO_SUPERUSER_PASSWORD": "deploy-admin-pass",
    }
    port = _free_port()
    server = None
    try:
        for line in steps:
            words = shlex.split(line)
            if words[0] == "export":
                for pair in words[1:]:
                    key, _, value = pair.partition("=")
                    # The guide's database and host are an example: the scratch ones instead.
                    env[key] = {"DATABASE_URL": scratch_database}.get(key, value)
                continue
            if words == ["make", "install"]:
                continue  # the suite runs inside the installed .venv already
            assert words[0].startswith(VENV), line
            program = Path(sys.executable).parent / words[0][len(VENV) :]
            if words[0] == VENV + "python":
                program = Path(sys.executable)
            if "createsuperuser" in words:
                words += ["--noinput", "--username", "admin", "--email", "admin@example.org"]
            if words[0].endswith("gunicorn"):
                words = [w if w != "127.0.0.1:8000" else f"127.0.0.1:{port}" for w in words]
                server = subprocess.Popen(
                    [str(program), *words[1:], "-w", "1"],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                continue
            done = subprocess.run(
                [str(program), *words[1:]], cwd=REPO, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        assert server is not None, "the guide starts no gunicorn"
        assert mo.stat().st_mtime >= started, "compilemessages wrote no .mo"
        static = tmp_path / "var" / "static"
        assert (static / "annotation" / "results.css").is_file()
        assert (static / "admin" / "css" / "base.css").is_file()

        https = {"Host": "eval.example.org", "X-Forwarded-Proto": "https"}
        for _ in range(600):  # until gunicorn listens
            try:
                status, body = _get(port, "/accounts/login/", **https, **{"Accept-Language": "ja"})
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200
        assert "ログイン" in body.decode(), "the login page is not in Japanese"
        status, body = _get(port, "/static/annotation/results.css", **https)
        assert status == 200 and b"th.num" in body
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
