from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation import exchange
from generation.importers import ImportFormatError, read_limited


class Command(BaseCommand):
    help = (
        "Import judgments in FastChat's battle JSONL shape (model_a, model_b, winner, "
        "question_id, judge, optional conversation_a/_b), or a Rakuda tournament file, into a "
        "study; when no study of that name exists, create one from the file (models, "
        "questions, answers). model_a (Rakuda's model1) is kept as the answer shown first; a "
        "judgment of an earlier turn of a multi-turn question (turn below its turns) is kept "
        "with its turn. Atomic; importing the same file again adds nothing (each row has a "
        "content key) and says how many rows were already imported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--study", required=True, help="study name (created if missing)")
        parser.add_argument(
            "--shown-order-unknown",
            action="store_true",
            help="model_a is not the answer the judge saw first in this file: keep no shown "
            "order (the position-advantage fit then leaves these votes out)",
        )
        parser.add_argument(
            "--voters",
            choices=("people", "judge"),
            default="people",
            help="who judged: people (human judgments, counted against K) or judge (an LLM "
            "judge such as GPT-4: kept apart, never counted against K, read with --voters judge)",
        )

    def handle(
        self, *args, file: Path, study: str, shown_order_unknown: bool, voters: str, **options
    ):
        try:
            data = read_limited(file, settings.MAX_VOTE_IMPORT_BYTES)
            summary = exchange.votes_import(
                data=data,
                filename=str(file),
                study_name=study,
                shown_order=not shown_order_unknown,
                voters=voters,
            )
        except (ImportFormatError, exchange.VoteImportError) as exc:
            raise CommandError(str(exc)) from None
        verb = "created study" if summary.created_study else "into study"
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {summary.votes} votes {verb} {summary.study.name!r} "
                f"({summary.votes} new, {summary.already} already imported; "
                f"{summary.models} models, {summary.questions} questions)"
            )
        )
        for turn, n in summary.earlier_turns.items():
            self.stdout.write(
                f"{n} of them judged the conversation up to turn {turn} only: kept apart, read "
                f"with export_results --turn {turn} (results read the whole conversation)"
            )
