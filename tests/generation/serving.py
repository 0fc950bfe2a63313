"""A real OpenAI-compatible server for the tests (``transformers serve`` over the tiny model) and
a small proxy in front of it that records every request it forwards and can answer some with
an error instead (429 with Retry-After, 503), so the tests count what a run asked for."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.conftest import wait_for

CHAT = "/v1/chat/completions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TinyServer:
    """``transformers serve`` pinned to a local model directory, offline, on a free port.

    The hub is never asked: HF_HUB_OFFLINE=1, and the model is named by its absolute path,
    which the server loads as a local directory (an existing path is taken as is).
    """

    def __init__(self, model_dir: Path, log_path: Path):
        self.model_id = str(model_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        transformers_cli = Path(sys.executable).with_name("transformers")
        self.process = subprocess.Popen(
            [
                str(transformers_cli),
                "serve",
                self.model_id,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--device",
                "cpu",
                "--log-level",
                "info",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            self._ready, timeout=300, interval=0.1, message=f"transformers serve: {self.tail()}"
        )

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"transformers serve exited: {self.tail()}")
        try:
            return httpx.get(f"{self.url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self._log.close()


@dataclass
class Seen:
    """One request the proxy received."""

    at: float
    path: str
    body: dict
    authorization: str
    status: int = 0

    @property
    def turn_key(self) -> tuple[str, int]:
        """(first user turn, number of user turns): which question and turn was asked for."""
        users = [m["content"] for m in self.body.get("messages", []) if m["role"] == "user"]
        return users[0], len(users)


@dataclass
class CountingProxy:
    """Forwards to ``upstream`` (a base URL ending in /v1), recording each request."""

    upstream: str
    seen: list[Seen] = field(default_factory=list)
    # Statuses to answer the next chat requests with instead of forwarding (429, 503 ...).
    failures: list[int] = field(default_factory=list)
    open_handlers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        proxy = self
        origin = self.upstream.removesuffix("/v1")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._forward(b"")

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                self._forward(self.rfile.read(length))

            def _forward(self, body: bytes):
                with proxy.lock:
                    proxy.open_handlers += 1
                try:
                    seen = Seen(
                        at=time.monotonic(),
                        path=self.path,
                        body=json.loads(body) if body else {},
                        authorization=self.headers.get("authorization", ""),
                    )
                    with proxy.lock:
                        proxy.seen.append(seen)
                        failure = proxy.failures.pop(0) if proxy.failures else None
                    if failure is not None and self.path.endswith(CHAT):
                        seen.status = failure
                        payload = json.dumps({"error": {"message": "injected"}}).encode()
                        self.send_response(failure)
                        self.send_header("content-type", "application/json")
                        self.send_header("retry-after", "0")
                        self.send_header("content-length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    response = httpx.request(
                        self.command,
                        origin + self.path,
                        content=body,
                        headers={"content-type": "application/json"},
                        timeout=600,
                    )
                    seen.status = response.status_code
                    self.send_response(response.status_code)
                    self.send_header("content-type", response.headers.get("content-type", ""))
                    self.send_header("content-length", str(len(response.content)))
                    self.end_headers()
                    self.wfile.write(response.content)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a killed worker)
                finally:
                    with proxy.lock:
                        proxy.open_handlers -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def chats(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.endswith(CHAT)]

    def quiet(self, seconds: float = 1.0) -> bool:
        """No request open, and none arrived for ``seconds``."""
        with self.lock:
            last = self.seen[-1].at if self.seen else 0.0
            return self.open_handlers == 0 and time.monotonic() - last >= seconds

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
