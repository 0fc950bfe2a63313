"""Reading an uploaded or named file for an import (plain module, no Django): bounded by size,
UTF-8 with its bad bytes named by line, no NUL; and the one error every import raises, naming the
file, the line and what is wrong. Every app's importers and the admin and API upload helpers use
it."""

from __future__ import annotations

import os
from pathlib import Path

NOT_UTF8 = "is not UTF-8 text ({detail})"
TOO_LARGE = "is {size} bytes, over the {limit}-byte limit"
NUL_BYTE = "holds a NUL byte (0x00), which cannot be stored; remove it"


class ImportFormatError(ValueError):
    """A file that cannot be imported; the message names the file and the line."""

    def __init__(self, filename: str, problem: str, line: int | None = None):
        self.filename = filename
        self.line = line
        self.problem = problem
        where = f"{filename}, line {line}" if line is not None else filename
        super().__init__(f"{where}: {problem}")


def read_limited(path: str | os.PathLike, limit: int) -> bytes:
    """A file's bytes for an import, refused by its size before it is read (ImportFormatError,
    as an unreadable file is)."""
    try:
        size = os.stat(path).st_size
        if size > limit:
            raise ImportFormatError(os.fspath(path), TOO_LARGE.format(size=size, limit=limit))
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImportFormatError(os.fspath(path), f"cannot read ({exc.strerror})") from None


def decode(data: bytes, filename: str, *, limit: int | None = None) -> str:
    """UTF-8 text (a byte-order mark is dropped); an undecodable byte is reported by line."""
    if limit is not None and len(data) > limit:
        raise ImportFormatError(filename, TOO_LARGE.format(size=len(data), limit=limit))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        detail = f"bad byte 0x{data[exc.start]:02x}; save the file as UTF-8"
        raise ImportFormatError(filename, NOT_UTF8.format(detail=detail), line=line) from None
    nul = text.find("\x00")
    if nul != -1:
        raise ImportFormatError(filename, NUL_BYTE, line=text.count("\n", 0, nul) + 1)
    return text
