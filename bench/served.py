"""A real OpenAI-compatible server for the benches: ``transformers serve`` over a model folder,
offline, on the CPU (bench/generation.py and bench/judge.py start it the same way)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(model_dir: Path, threads: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``transformers serve`` pinned to the model directory, offline; returns (process, url)
    once it answers ``/v1/models``."""
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }
    cli = Path(sys.executable).with_name("transformers")
    command = [str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*command, "--device", "cpu"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/v1"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"transformers serve exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
