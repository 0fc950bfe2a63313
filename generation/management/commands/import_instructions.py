from generation.management.imports import FileImportCommand
from generation.management.options import named
from generation.models import LanguageModel
from generation.training.data import instruction_dataset_import


class Command(FileImportCommand):
    help = (
        "Import an instruction data set from JSONL / JSON / CSV with 'instruction', optional "
        "'input' and 'output' (Alpaca, dolly-ja, oasst1-89k-ja), or JSONL 'messages' "
        "(one user and one assistant message). Atomic: a bad file imports nothing."
    )

    makes = "data set"

    def add_import_options(self, parser):
        parser.add_argument(
            "--drop-duplicates", action="store_true", help="keep only the first of exact repeats"
        )
        parser.add_argument(
            "--tokenizer",
            default="",
            help="registered model whose tokenizer and prompt format count the tokens",
        )

    def import_file(self, data: bytes, filename: str, opts: dict):
        model = named(LanguageModel, opts["tokenizer"], "model") if opts["tokenizer"] else None
        return instruction_dataset_import(
            name=opts["name"],
            data=data,
            filename=filename,
            description=opts["description"],
            drop_duplicates=opts["drop_duplicates"],
            tokenizer_model=model,
        )

    def report(self, dataset) -> None:
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
