from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation import results
from annotation.models import Study


class Command(BaseCommand):
    help = (
        "Export a study's results: csv (win/tie/loss per model pair), json (pairs and "
        "strengths with intervals), md (both tables, ready to paste), battles (FastChat battle "
        "JSONL), votes (raw votes CSV), strengths (strength table CSV)."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study name")
        parser.add_argument("--format", required=True, choices=results.EXPORT_FORMATS)
        parser.add_argument("--out", type=Path, help="write here instead of standard output")

    def handle(self, *args, study: str, format: str, out: Path | None, **options):
        found = Study.objects.filter(name=study).first()
        if found is None:
            raise CommandError(f"no study named {study!r}")
        text, _, _ = results.export(study=found, fmt=format)
        if out is None:
            self.stdout.write(text, ending="")
            return
        out.write_text(text, encoding="utf-8")
        self.stderr.write(f"wrote {out} ({len(text.encode())} bytes)")
