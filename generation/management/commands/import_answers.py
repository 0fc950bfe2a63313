from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.answers_import import answers_import_file
from generation.importers import ImportFormatError


class Command(BaseCommand):
    help = (
        "Import answers generated elsewhere, in FastChat's model_answer shape (JSONL: "
        "'question_id', 'model_id', 'choices[0].turns'), as an imported run per model. Answers "
        "are matched to the prompt set's questions by question_id; a model not registered yet "
        "is registered as an imported one (nothing to load). Atomic: a bad file imports nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--prompt-set", required=True, help="name of the prompt set the answers answer"
        )
        parser.add_argument(
            "--model",
            default="",
            help="model the answers belong to (default: each line's model_id)",
        )

    def handle(self, *args, file: Path, prompt_set: str, model: str, **options):
        try:
            runs = answers_import_file(path=file, prompt_set_name=prompt_set, model_name=model)
        except (ImportFormatError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        for run in runs:
            questions = run.answers.values("question").distinct().count()
            self.stdout.write(
                self.style.SUCCESS(
                    f"imported {run.total} answers to {questions} questions of "
                    f"{run.prompt_set.name!r} as run {run.pk} of model {run.model.name!r}"
                )
            )
