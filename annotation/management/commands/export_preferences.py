from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.preferences import preferences_export
from evalsite.cli import check_out
from evalsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Turn a study's votes into preference pairs for DPO: per comparison the answer most of "
        "its people preferred (ties and split votes dropped; judge, gold-check and excluded "
        "votes left out), stored as a preference data set and, with --out, written as the JSONL "
        "TRL reads (prompt, chosen, rejected)."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study name (or id)")
        parser.add_argument("--out", type=Path, help="also write the pairs here as JSONL")
        parser.add_argument(
            "--model",
            default="",
            help="render each prompt with this model's template (the model to be tuned); "
            "default: the plain question",
        )
        parser.add_argument("--name", default="", help="name of the preference data set")

    def handle(self, *args, study: str, out: Path | None, model: str, name: str, **options):
        check_out(out)  # before the data set is stored: a bad path changes nothing
        try:
            dataset = preferences_export(study=study, model=model or None, name=name, out=out)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        stats = dataset.stats
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("dropped", {}).items()))
        self.stdout.write(
            f"preference data set {dataset.name!r}: {stats['pairs']} pairs from "
            f"{stats['comparisons_voted']} voted comparisons ({stats['votes']} people's votes)"
            + (f"; dropped: {dropped}" if dropped else "")
        )
        if dataset.rendered_for:
            self.stdout.write(f"prompts rendered with the template of {dataset.rendered_for!r}")
        if out:
            self.stdout.write(f"wrote {out}")
