"""What management commands share about files they are told to write (``--out``): refused in
one line before anything is made or stored, never a traceback."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

OUT_NO_FOLDER = "--out {path}: the folder {folder} does not exist"
OUT_IS_FOLDER = "--out {path}: is a folder; give a file name"
OUT_NOT_WRITABLE = "--out {path}: cannot write there ({reason})"


def check_out(path: Path | None) -> Path | None:
    """Refuse an ``--out`` that cannot be written (missing folder, a folder itself) with a
    ``CommandError``; call before doing the work, so a bad path changes nothing."""
    if path is None:
        return None
    if path.is_dir():
        raise CommandError(OUT_IS_FOLDER.format(path=path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CommandError(OUT_NO_FOLDER.format(path=path, folder=folder))
    return path


def write_out(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8), any OS refusal as one ``CommandError`` line."""
    check_out(path)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(OUT_NOT_WRITABLE.format(path=path, reason=exc.strerror)) from None
