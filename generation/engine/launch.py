"""Launching training over several processes: the command line and the process group.

Plain module, no Django. A fine-tune run that asks for several processes is trained by a child
process group the worker starts and watches (``generation.training.processes``):

- without an accelerate config, ``torchrun --standalone`` (``torch.distributed.run``) starts the
  processes; the Trainer (through accelerate) sees ``WORLD_SIZE`` / ``RANK`` and trains with
  data parallelism: NCCL between GPUs, gloo on a CPU machine;
- with one, ``accelerate launch --config_file FILE`` starts them, which is how FSDP and
  DeepSpeed ZeRO are chosen (generation/training/accelerate/ holds the shipped files).

The group has its own session, so killing it (``stop_group``) reaches every process the
launcher started, and nothing else of the worker's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ACCELERATE_DIR = Path(__file__).resolve().parent.parent / "training" / "accelerate"
NO_CONFIG = "accelerate config {name!r} not found (a path, or one of the shipped files: {shipped})"
TOO_FEW_GPUS = "the run asks for {processes} processes but this worker sees {gpus} GPU(s)"


def shipped_configs() -> list[str]:
    """The accelerate config files this project ships, by name."""
    return sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml"))


def accelerate_config_path(name: str) -> str:
    """A config given as a path, or as the name of a shipped file (``fsdp.yaml``)."""
    for candidate in (Path(name), ACCELERATE_DIR / name):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ValueError(NO_CONFIG.format(name=name, shipped=", ".join(shipped_configs())))


def free_port() -> int:
    """A TCP port nobody listens on now, for the processes' rendezvous (two runs launched on one
    machine at once must not share accelerate's default port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(
    *,
    python: str,
    processes: int,
    module: str,
    args: Sequence[str],
    accelerate_config: str = "",
    port: int | None = None,
) -> list[str]:
    """The command that starts ``processes`` copies of ``python -m module args`` on this machine."""
    if accelerate_config:
        return [
            python,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            accelerate_config_path(accelerate_config),
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--main_process_port",
            str(port or free_port()),
            "--module",
            module,
            *args,
        ]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(processes),
        "-m",
        module,
        *args,
    ]


def gpus_visible() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def devices_check(processes: int) -> None:
    """On a GPU machine every process needs a GPU of its own (ValueError if too few are
    visible); on a CPU machine any number of processes share the cores (gloo)."""
    gpus = gpus_visible()
    if gpus and processes > gpus:
        raise ValueError(TOO_FEW_GPUS.format(processes=processes, gpus=gpus))


def start_group(
    command: Sequence[str], *, env: Mapping[str, str], cwd: str, log_path: str | os.PathLike
) -> subprocess.Popen:
    """Start ``command`` in a session (process group) of its own, its output appended to
    ``log_path``."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen, *, grace: float = 10.0) -> None:
    """SIGTERM to the whole group, SIGKILL to what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is not None and not _group_alive(process.pid):
            break
    process.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
