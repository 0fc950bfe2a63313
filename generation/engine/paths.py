"""Where model files may come from: a hub id, or a path inside the storage root. Plain module.

Rows keep model and adapter paths relative to MODEL_STORAGE. Anything else a row could say (an
absolute path, ``..`` climbing out, a folder relative to the worker's working directory) would
let whoever edits the row make the worker load, and with ``trust_remote_code`` run, files of
their choosing. ``confine`` checks a value when it is stored; ``resolve`` checks it again when
the worker loads it, symlinks included.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

OUTSIDE_STORAGE = (
    "{value!r} is outside MODEL_STORAGE: give a hub id (organisation/name) or a path relative "
    "to MODEL_STORAGE"
)
NOT_A_HUB_ID = "{value!r} is neither a folder under MODEL_STORAGE nor a hub id (organisation/name)"
LOCAL_FOLDER = (
    "{value!r} names a folder outside MODEL_STORAGE (relative to the worker's directory); "
    "move it under MODEL_STORAGE"
)

# The hub's repository ids: "name" or "organisation/name".
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confine(value: str | os.PathLike, storage_root: str | os.PathLike) -> str:
    """The value as a row keeps it: a path relative to the storage root (an absolute path inside
    it is made relative), or a hub id. Raises ``ValueError`` for anything that leaves the root."""
    name = os.fspath(value).strip()
    if not name:
        return ""
    root = os.path.normpath(os.path.abspath(storage_root))
    if name.startswith("~") or "\\" in name or "\x00" in name:
        raise ValueError(OUTSIDE_STORAGE.format(value=name))
    full = os.path.normpath(name if os.path.isabs(name) else os.path.join(root, name))
    if not _inside(full, root) or full == root:
        raise ValueError(OUTSIDE_STORAGE.format(value=name))
    return os.path.relpath(full, root)


def resolve(value: str | os.PathLike, storage_root: str | os.PathLike) -> str:
    """What to hand ``from_pretrained``: a folder under the storage root, or a hub id.

    Checked at load time as well as when stored: a symlink that leads out of the root, or a name
    that is no hub id and no folder under the root, is refused.
    """
    relative = confine(value, storage_root)
    root = Path(storage_root).resolve()
    candidate = Path(storage_root) / relative
    if candidate.exists():
        if not candidate.resolve().is_relative_to(root):
            raise ValueError(OUTSIDE_STORAGE.format(value=os.fspath(value)))
        return str(candidate)
    if not HUB_ID.fullmatch(relative):
        raise ValueError(NOT_A_HUB_ID.format(value=os.fspath(value)))
    if os.path.exists(relative):
        # from_pretrained would read this folder relative to the working directory.
        raise ValueError(LOCAL_FOLDER.format(value=os.fspath(value)))
    return relative


# Where architectures keep their context length in config.json.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(value: str | os.PathLike, storage_root: str | os.PathLike) -> int | None:
    """The context length a local model's ``config.json`` declares; None for a hub id, a folder
    without one, or a config that names none (nothing to check against)."""
    import json

    try:
        folder = Path(resolve(value, storage_root))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    lengths = [config.get(key) for key in CONTEXT_KEYS]
    found = [n for n in lengths if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    return found[0] if found else None
