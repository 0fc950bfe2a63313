from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Study
from evalsite.errors import ServiceError
from generation.importers import ImportFormatError
from judging.imports import judgments_load


class Command(BaseCommand):
    help = (
        "Import a FastChat model_judgment file into a study as a judge's verdicts: pairwise "
        "(question_id, model_1, model_2, g1_winner, g2_winner, judge, turn) become judgments and "
        "judge votes, single (question_id, model, score, judge, turn) grades on the judge "
        "prompt's scale. Load the judge prompts first (load_judge_prompt judge_prompts.jsonl). "
        "Checked first, written atomically; the same file again adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--study", required=True, help="study name")

    def handle(self, *args, file: Path, study: str, **options):
        found = Study.objects.filter(name=study).first()
        if found is None:
            raise CommandError(f"no study named {study!r}")
        try:
            result = judgments_load(file, study=found)
        except (ImportFormatError, ServiceError, OSError) as exc:
            raise CommandError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
        self.stdout.write(self.style.SUCCESS(result.message()))
