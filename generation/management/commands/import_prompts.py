from evalsite.errors import ServiceError
from generation.management.imports import FileImportCommand
from generation.registry import NAME_TAKEN, prompt_set_import

# The service's refusal names the admin's and the API's field; a command user has a flag.
NAME_TAKEN_FLAG = "a prompt set named {name!r} already exists (give --replace to rebuild it)"


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
        try:
            return prompt_set_import(
                name=opts["name"],
                data=data,
                filename=filename,
                replace=opts["replace"],
                description=opts["description"],
            )
        except ServiceError as exc:
            if str(exc) == NAME_TAKEN.format(name=opts["name"]):
                raise ServiceError(NAME_TAKEN_FLAG.format(name=opts["name"])) from None
            raise

    def report(self, prompt_set) -> None:
        count = prompt_set.questions.count()
        self.stdout.write(
            self.style.SUCCESS(f"imported {count} questions into prompt set {prompt_set.name!r}")
        )
