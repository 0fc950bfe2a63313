from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.importers import ImportFormatError, read_limited
from generation.models import LanguageModel
from generation.training.data import instruction_dataset_import


class Command(BaseCommand):
    help = (
        "Import an instruction data set from JSONL / JSON / CSV with 'instruction', optional "
        "'input' and 'output' (Alpaca, dolly-ja, oasst1-89k-ja), or JSONL 'messages' "
        "(one user and one assistant message). Atomic: a bad file imports nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--name", required=True, help="name of the new data set")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--drop-duplicates", action="store_true", help="keep only the first of exact repeats"
        )
        parser.add_argument(
            "--tokenizer",
            default="",
            help="registered model whose tokenizer and prompt format count the tokens",
        )

    def handle(self, *args, file: Path, name: str, **opts):
        model = None
        if opts["tokenizer"]:
            model = LanguageModel.objects.filter(name=opts["tokenizer"]).first()
            if model is None:
                raise CommandError(f"no model named {opts['tokenizer']!r}")
        try:
            dataset = instruction_dataset_import(
                name=name,
                data=read_limited(file, settings.MAX_UPLOAD_BYTES),
                filename=str(file),
                description=opts["description"],
                drop_duplicates=opts["drop_duplicates"],
                tokenizer_model=model,
            )
        except (ImportFormatError, ServiceError) as exc:
            raise CommandError(str(exc)) from None
        stats = dataset.stats
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {stats['rows']} examples into data set {dataset.name!r}: "
                f"{stats['unique_instructions']} unique instructions, "
                f"{stats['duplicate_rows']} exact-duplicate rows"
                + (
                    f" ({stats['dropped_duplicates']} dropped)"
                    if "dropped_duplicates" in stats
                    else ""
                )
            )
        )
        tokens = stats.get("tokens")
        if tokens:
            total = ", ".join(f"{k} {v}" for k, v in tokens["total"].items())
            self.stdout.write(f"tokens per example ({tokens['model']}): {total}")
