from generation.management.imports import FileImportCommand
from generation.registry import prompt_set_import


class Command(FileImportCommand):
    help = (
        "Import a prompt set from CSV (column 'question', optional 'category', 'question_id') "
        "or JSONL ('text' / 'question' / 'input', or FastChat 'question_id'/'category'/'turns', "
        "one or more turns). "
        "Atomic: a bad file imports nothing."
    )

    makes = "prompt set"

    def add_import_options(self, parser):
        parser.add_argument(
            "--replace",
            action="store_true",
            help="rebuild an existing set of that name (refused if it already has answers)",
        )

    def import_file(self, data: bytes, filename: str, opts: dict):
        return prompt_set_import(
            name=opts["name"],
            data=data,
            filename=filename,
            replace=opts["replace"],
            description=opts["description"],
        )

    def report(self, prompt_set) -> None:
        count = prompt_set.questions.count()
        self.stdout.write(
            self.style.SUCCESS(f"imported {count} questions into prompt set {prompt_set.name!r}")
        )
