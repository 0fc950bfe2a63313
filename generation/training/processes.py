"""Fine-tune runs over several processes: the worker launches them and watches.

The worker that claimed the run keeps holding it (its heartbeat thread keeps touching the row)
while a child process group trains: ``python -m generation.training.launched RUN WORKER`` under
torchrun or ``accelerate launch`` (engine/launch.py). Inside the group, rank 0 acts for the
worker: it writes the loss log, progress and checkpoints to the row and registers the result,
all conditioned on the row still being held by ``WORKER``, exactly as one process does; the
other ranks only train. So a cancel reaches rank 0 like it reaches a one-process run (it stops
after its step, with a checkpoint, and every rank with it), and the worker kills the process
group if it has not stopped ``FINETUNE_STOP_GRACE_SECONDS`` later.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.db import connection

from ..engine.launch import (
    devices_check,
    gpus_visible,
    launch_command,
    start_group,
    stop_group,
)
from ..models import FineTuneRun

log = logging.getLogger(__name__)

MODULE = "generation.training.launched"
# Set in the launched processes' environment: they train, they do not launch again.
LAUNCHED_ENV = "EVALSITE_LAUNCHED_RUN"
# A rank that fails writes its message here (``launched.py``), so the run shows why.
ERROR_FILE = "launch-error-rank{rank}.txt"
LOG_FILE = "launch.log"
PROCESSES_FAILED = "the {processes} training processes exited with code {code}{detail}"
POLL_SECONDS = 1.0


def run_dir(run: FineTuneRun) -> Path:
    return Path(settings.MODEL_STORAGE) / run.output_path


def launched_here() -> bool:
    """Whether this process is one of a launched group's (and must not launch again)."""
    return bool(os.environ.get(LAUNCHED_ENV))


def _environment(run: FineTuneRun) -> dict[str, str]:
    env = dict(os.environ)
    env[LAUNCHED_ENV] = str(run.pk)
    env.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    # The children import this checkout first, as the worker does.
    paths = [str(settings.BASE_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # The children reach the database the worker reaches (a test database, for one).
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql") and env.get("DATABASE_URL"):
        env["DATABASE_URL"] = urlunsplit(
            urlsplit(env["DATABASE_URL"])._replace(path="/" + quote(db["NAME"]))
        )
    env["MODEL_STORAGE"] = str(settings.MODEL_STORAGE)
    if not gpus_visible():
        # accelerate only goes distributed on a CPU when told to (then over gloo).
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def _failure(run: FineTuneRun, code: int) -> str:
    """Why the group failed: the first rank's own message when one wrote it."""
    folder = run_dir(run)
    for rank in range(run.processes):
        path = folder / ERROR_FILE.format(rank=rank)
        if path.is_file() and (text := path.read_text(errors="replace").strip()):
            return PROCESSES_FAILED.format(
                processes=run.processes, code=code, detail=f" (rank {rank}: {text})"
            )
    return PROCESSES_FAILED.format(
        processes=run.processes, code=code, detail=f"; see {LOG_FILE} in the run's directory"
    )


def finetune_run_launch(run: FineTuneRun, worker: str) -> None:
    """Train ``run`` in ``run.processes`` processes and wait for them (call while holding it).

    Returns when the group exits: after success (rank 0 registered the model), after a cancel
    or takeover (rank 0 stopped with a checkpoint), or raises RuntimeError with the failing
    rank's message.
    """
    devices_check(run.processes)
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(ERROR_FILE.format(rank="*")):
        stale.unlink()
    command = launch_command(
        python=sys.executable,
        processes=run.processes,
        module=MODULE,
        args=[str(run.pk), worker],
        accelerate_config=settings.FINETUNE_ACCELERATE_CONFIG,
    )
    log.info("fine-tune run %s: launching %s", run.pk, " ".join(command))
    process = start_group(
        command, env=_environment(run), cwd=str(settings.BASE_DIR), log_path=folder / LOG_FILE
    )
    mine = FineTuneRun.objects.filter(pk=run.pk, status=FineTuneRun.Status.RUNNING, worker=worker)
    let_go_at = None
    try:
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            if let_go_at is None and not mine.exists():
                # Cancelled or taken over: rank 0 stops after its step; give it time to save.
                let_go_at = time.monotonic()
            if let_go_at is not None and (
                time.monotonic() - let_go_at > settings.FINETUNE_STOP_GRACE_SECONDS
            ):
                log.warning("fine-tune run %s: killing its processes after a cancel", run.pk)
                break
    finally:
        # Whatever ended the wait (done, cancel, this worker shutting down), none outlive it.
        stop_group(process)
    code = process.returncode
    if let_go_at is None and code != 0:
        raise RuntimeError(_failure(run, code))
