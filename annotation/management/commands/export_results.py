from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation import ranking, results, results_export, tracking
from annotation.models import Study
from evalsite import trackers
from evalsite.cli import check_out, write_out

NEEDS_FORMAT = "the following arguments are required: --format (or --to-tracker)"


class Command(BaseCommand):
    help = (
        "Export a study's results: csv (win/tie/loss per model pair), json (pairs and "
        "strengths with intervals, and the options used), md (both tables, ready to paste), "
        "battles (FastChat battle JSONL), votes (raw votes CSV), strengths (strength table "
        "CSV). The fit options are the results page's. --to-tracker also (or instead) logs the "
        "strengths with their intervals and win/tie/loss to the experiment tracker."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study name")
        parser.add_argument("--format", choices=results_export.EXPORT_FORMATS)
        parser.add_argument("--out", type=Path, help="write here instead of standard output")
        parser.add_argument(
            "--method", choices=ranking.METHODS, default="bradley_terry", help="the model fitted"
        )
        parser.add_argument(
            "--position",
            action="store_true",
            help="also fit a first-position advantage (Bradley-Terry; votes with a shown order)",
        )
        parser.add_argument(
            "--resample",
            choices=ranking.RESAMPLE,
            default="question",
            help="what the bootstrap resamples",
        )
        parser.add_argument(
            "--style-control",
            action="store_true",
            help="also the length- and style-controlled fit (answer length, Markdown)",
        )
        parser.add_argument(
            "--bootstrap",
            type=int,
            default=ranking.DEFAULT_BOOTSTRAP,
            help="bootstrap rounds (0: none; sandwich intervals only)",
        )
        parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
        parser.add_argument(
            "--voters",
            choices=results.VOTERS,
            default="people",
            help="whose votes: people (default), the LLM judge's, or all: both combined by "
            "prediction-powered inference (never by adding votes)",
        )
        parser.add_argument(
            "--turn",
            type=int,
            help="votes on the conversation up to this user turn of multi-turn questions "
            "(imported judgments of an earlier turn); default: the whole conversation",
        )
        parser.add_argument(
            "--provenance",
            action="store_true",
            help="votes and battles: also how each side's answer was made (template version, "
            "stop reason, truncated, token counts, model revision)",
        )

        parser.add_argument(
            "--to-tracker",
            action="store_true",
            help="log the strengths (with intervals) and win/tie/loss to the experiment tracker "
            "(EXPERIMENT_TRACKER, or --tracker), as one run tagged with the study",
        )
        parser.add_argument(
            "--tracker",
            choices=[t for t in trackers.TRACKERS if t != trackers.NONE],
            help="with --to-tracker: this tracker instead of EXPERIMENT_TRACKER (the same "
            "locations: TENSORBOARD_LOG_DIR, MLFLOW_TRACKING_URI, WANDB_PROJECT / WANDB_MODE)",
        )

    def handle(self, *args, study: str, format: str | None, out: Path | None, **options):
        if format is None and not options["to_tracker"]:
            raise CommandError(NEEDS_FORMAT)
        if options["tracker"] and not options["to_tracker"]:
            raise CommandError("--tracker chooses where --to-tracker logs: add --to-tracker")
        check_out(out)
        found = Study.objects.filter(name=study).first()
        if found is None:
            raise CommandError(f"no study named {study!r}")
        if options["bootstrap"] < 0:
            raise CommandError("--bootstrap must be 0 or more")
        if options["turn"] is not None and options["turn"] < 1:
            raise CommandError(results.BAD_TURN.format(value=options["turn"]))
        fit = {
            "method": "bradley_terry" if options["position"] else options["method"],
            "position": options["position"],
            "resample": options["resample"],
            "style_control": options["style_control"],
            "bootstrap": options["bootstrap"],
            "seed": options["seed"],
            "voters": options["voters"],
            "turn": options["turn"],
        }
        if options["to_tracker"]:
            tracker = trackers.tracker_from(settings, options["tracker"])
            try:
                logged = tracking.study_results_log(study=found, tracker=tracker, **fit)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stderr.write(f"logged to {logged.tracker} as run {logged.run} ({logged.where})")
            if format is None:
                return
        try:
            text, _, _ = results_export.export(
                study=found, fmt=format, provenance=options["provenance"], **fit
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if out is None:
            self.stdout.write(text, ending="")
            return
        write_out(out, text)
        self.stderr.write(f"wrote {out} ({len(text.encode())} bytes)")
