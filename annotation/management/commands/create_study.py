from django.core.management.base import BaseCommand, CommandError

from annotation import studies
from annotation.models import Study
from evalsite.errors import ServiceError
from generation.models import PromptSet


class Command(BaseCommand):
    help = (
        "Create a study comparing succeeded runs (one per model) on one prompt set: every model "
        "pair on every question, in one transaction."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="study name (admin-facing, never shown to annotators)")
        parser.add_argument("--prompt-set", required=True, help="name of the prompt set")
        parser.add_argument(
            "--runs", required=True, nargs="+", type=int, metavar="ID", help="generation run ids"
        )
        parser.add_argument(
            "--votes-per-comparison", type=int, default=3, metavar="K", help="default: 3"
        )
        parser.add_argument("--title", default="", help="title shown to annotators")
        parser.add_argument("--instructions", default="", help="instructions for annotators")
        parser.add_argument(
            "--open", action="store_true", help="open it now (flags self-identifying answers)"
        )
        parser.add_argument(
            "--sampling",
            choices=Study.Sampling.values,
            default=Study.Sampling.UNIFORM,
            help="how pairs are handed out: uniform (fewest votes first) or active (once every "
            "pair has a vote, the least settled model pairs first); default: uniform",
        )
        parser.add_argument(
            "--routing",
            action="store_true",
            help="judge first: after `manage.py judge` finishes, people vote only on what the "
            "judge was unsure of plus an audit sample (open the study after the judge run)",
        )
        parser.add_argument(
            "--audit-share",
            type=float,
            default=0.2,
            metavar="SHARE",
            help="routing: share of the judge's consistent verdicts also given to people "
            "(default: 0.2)",
        )

    def handle(self, *args, **opts):
        prompt_set = PromptSet.objects.filter(name=opts["prompt_set"]).first()
        if prompt_set is None:
            raise CommandError(f"no prompt set named {opts['prompt_set']!r}")
        try:
            study = studies.study_create(
                name=opts["name"],
                prompt_set=prompt_set,
                runs=opts["runs"],
                votes_per_comparison=opts["votes_per_comparison"],
                title=opts["title"],
                instructions=opts["instructions"],
                open_now=opts["open"],
                sampling=opts["sampling"],
                routing=opts["routing"],
                audit_share=opts["audit_share"],
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"study {study.pk} {study.name!r}: {study.comparisons.count()} comparisons, "
            f"K={study.votes_per_comparison}, {study.sampling} sampling, {study.status}"
            + (f", routing (audit share {study.audit_share:g})" if study.routing else "")
        )
        counts = studies.study_flag_counts(study=study)
        if counts["flags"]:
            self.stdout.write(
                self.style.WARNING(
                    f"{counts['flags']} span(s) may give a model away "
                    f"({counts['unreviewed']} not reviewed): review them before opening "
                    f"(admin: the study's identity flags; API: /api/studies/{study.pk}/"
                    "identity-flags/); a flag nobody reviewed opens masked"
                )
            )
