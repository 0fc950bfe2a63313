"""The base of the commands that import one file as a new named row (a data set, a prompt set)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.importers import ImportFormatError, read_limited


class FileImportCommand(BaseCommand):
    """``manage.py <command> FILE --name NAME [--description TEXT]``: the file is read (refused
    over MAX_UPLOAD_BYTES) and handed to ``import_file``; a bad file or a refused import is the
    command's error, and nothing is imported."""

    makes = ""  # what --name names ("data set", "prompt set")

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--name", required=True, help=f"name of the new {self.makes}")
        parser.add_argument("--description", default="")
        self.add_import_options(parser)

    def add_import_options(self, parser) -> None:
        """The command's own options."""

    def import_file(self, data: bytes, filename: str, opts: dict):
        """Import ``data`` through the app's service; returns what it made."""
        raise NotImplementedError

    def report(self, made) -> None:
        """Say what was imported."""
        raise NotImplementedError

    def handle(self, *args, file: Path, **opts):
        try:
            made = self.import_file(read_limited(file, settings.MAX_UPLOAD_BYTES), str(file), opts)
        except (ImportFormatError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        self.report(made)
