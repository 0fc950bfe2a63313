from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.importers import ImportFormatError
from judging.prompts import judge_prompt_load


class Command(BaseCommand):
    help = (
        "Load judge prompts from a file: JSON / JSON Lines / YAML with name, kind "
        "(pairwise|grading), template (Jinja over question, answer_1, answer_2 or answer, "
        "reference, criteria), verdict_format (last_line_123|brackets_abc|"
        "brackets_two_ratings|score|brackets_rating), system_prompt, "
        "score_min, score_max; FastChat's judge_prompts.jsonl (MT-Bench, Rakuda); or a text "
        "template with YAML front matter. Checked first, then stored atomically; a name that "
        "exists gets a new version when a judge run used the current one."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--only", action="append", default=None, help="load just this prompt (repeatable)"
        )
        parser.add_argument("--name", help="store a one-prompt file under this name")

    def handle(self, *args, file: Path, only: list[str] | None, name: str | None, **options):
        try:
            rows = judge_prompt_load(file, only=only, name=name)
        except (ImportFormatError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        for row in rows:
            self.stdout.write(
                self.style.SUCCESS(f"judge prompt {row} ({row.kind}, {row.verdict_format})")
            )
