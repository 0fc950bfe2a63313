from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.importers import ImportFormatError, read_limited
from generation.registry import prompt_set_import


class Command(BaseCommand):
    help = (
        "Import a prompt set from CSV (column 'question', optional 'category', 'question_id') "
        "or JSONL ('text' / 'question' / 'input', or FastChat 'question_id'/'category'/'turns', "
        "one or more turns). "
        "Atomic: a bad file imports nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--name", required=True, help="name of the new prompt set")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="rebuild an existing set of that name (refused if it already has answers)",
        )

    def handle(self, *args, file: Path, name: str, description: str, replace: bool, **options):
        try:
            prompt_set = prompt_set_import(
                name=name,
                data=read_limited(file, settings.MAX_UPLOAD_BYTES),
                filename=str(file),
                replace=replace,
                description=description,
            )
        except (ImportFormatError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        count = prompt_set.questions.count()
        self.stdout.write(
            self.style.SUCCESS(f"imported {count} questions into prompt set {prompt_set.name!r}")
        )
