import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from annotation import results
from annotation.models import Study


class Command(BaseCommand):
    help = (
        "Compare two studies over the same models (e.g. human votes against an imported "
        "GPT-4-judged study): Kendall's tau of the strengths and per pair both win rates."
    )

    def add_arguments(self, parser):
        parser.add_argument("first", help="study name")
        parser.add_argument("second", help="study name")
        parser.add_argument("--json", action="store_true", help="print JSON")
        for which in ("first", "second"):
            parser.add_argument(
                f"--voters-{which}",
                choices=results.VOTERS,
                default="people",
                help=f"whose votes in the {which} study: people (default), judge or all",
            )

    def handle(self, *args, first: str, second: str, **options):
        studies = []
        for name in (first, second):
            study = Study.objects.filter(name=name).first()
            if study is None:
                raise CommandError(f"no study named {name!r}")
            studies.append(study)
        try:
            compared = results.studies_compare(
                first=studies[0],
                second=studies[1],
                voters=(options["voters_first"], options["voters_second"]),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(_dumps(compared))
            return
        tau = compared["kendall_tau"]
        self.stdout.write(
            f"{len(compared['models'])} models in both; Kendall's tau "
            + ("n/a" if tau is None else f"{tau:.3f} (p = {compared['p_value']:.3g})")
        )
        self.stdout.write(f"{'model pair':<50} {'win rate 1':>10} {'win rate 2':>10}")
        for p in compared["pairs"]:
            rates = [
                "-" if r is None else f"{100 * r:.1f}%"
                for r in (p["win_rate_first"], p["win_rate_second"])
            ]
            label = f"{p['model_a']} v.s. {p['model_b']}"
            self.stdout.write(f"{label:<50} {rates[0]:>10} {rates[1]:>10}")


def _dumps(value) -> str:
    return jsonlib.dumps(value, ensure_ascii=False, indent=2)
