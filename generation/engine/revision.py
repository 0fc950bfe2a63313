"""Which exact weights a worker loaded: the revision an answer records. Plain module, no Django.

A model loaded from the hub carries the commit hash the loader resolved (``config._commit_hash``).
A local directory has none of its own; it is named by the hub cache snapshot it is (the snapshot
folder is the commit), by the git commit it is checked out at, or else by a digest of its files
(names and sizes, and the content of its small JSON files: config, tokenizer, weight index), so
two answers with the same revision came from the same files.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

HEX_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# JSON files up to this size are digested whole; weights are named by file name and size.
SMALL_FILE = 1 << 20


def model_revision(model: Any, path: str | os.PathLike, adapter: str | os.PathLike | None) -> str:
    """The revision of loaded weights: the commit the loader saw, or the local directory's."""
    config = getattr(model, "config", None)
    commit = getattr(config, "_commit_hash", None)
    revision = commit or local_revision(path)
    if adapter is not None:
        revision += f"+adapter:{local_revision(adapter)}"
    return revision


def local_revision(path: str | os.PathLike) -> str:
    """A directory's revision: its hub snapshot or git commit, else ``sha256:`` of its files."""
    folder = Path(path)
    if not folder.is_dir():
        return str(path)  # a hub id the loader resolved without telling its commit
    if folder.parent.name == "snapshots" and HEX_COMMIT.match(folder.name):
        return folder.name
    head = _git_head(folder)
    if head:
        return head
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder)}\x00{size}\x00".encode())
        if file.suffix == ".json" and size <= SMALL_FILE:
            digest.update(file.read_bytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def _git_head(folder: Path) -> str | None:
    head = folder / ".git" / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text().strip()
    if HEX_COMMIT.match(ref):
        return ref
    if ref.startswith("ref: "):
        target = folder / ".git" / ref[5:]
        if target.is_file():
            commit = target.read_text().strip()
            return commit if HEX_COMMIT.match(commit) else None
    return None
