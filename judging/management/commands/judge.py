import json

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Study
from generation.errors import ServiceError
from generation.models import LanguageModel
from generation.workers import follow
from judging.models import JudgeRun
from judging.prompts import judge_prompt_for
from judging.runs import judge_run_create, judge_run_execute
from judging.summary import judge_run_summary


class Command(BaseCommand):
    help = (
        "Queue a judge run (judge model x study): every comparison judged in both orders, or "
        "every answer graded with --grading; --wait shows progress, then the summary."
    )

    def add_arguments(self, parser):
        parser.add_argument("--study", required=True, help="study name")
        parser.add_argument("--judge", required=True, help="registered model name of the judge")
        parser.add_argument(
            "--prompt",
            "--template",
            dest="prompt",
            help="judge prompt name (its latest version); default ja_pairwise / ja_grading",
        )
        parser.add_argument("--grading", action="store_true", help="grade each answer 1-5")
        parser.add_argument(
            "--inconsistent",
            choices=JudgeRun.Inconsistent.values,
            default=JudgeRun.Inconsistent.TIE,
            help="comparisons whose two orders disagree: count as a tie, or leave out",
        )
        parser.add_argument("--attempts", type=int, default=3, help="tries per verdict")
        parser.add_argument(
            "--comparisons", default="", help="comma-separated comparison ids (default: all)"
        )
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--params",
            default="{}",
            help="judge decoding as JSON, e.g. '{\"max_new_tokens\": 128}'",
        )
        parser.add_argument("--wait", action="store_true", help="wait and show a progress bar")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="judge in this process instead of a worker (no broker needed)",
        )

    def handle(self, *args, **opts):
        study = Study.objects.filter(name=opts["study"]).first()
        if study is None:
            raise CommandError(f"no study named {opts['study']!r}")
        judge = LanguageModel.objects.filter(name=opts["judge"]).first()
        if judge is None:
            raise CommandError(f"no model named {opts['judge']!r}")
        try:
            params = json.loads(opts["params"])
            ids = [int(i) for i in opts["comparisons"].split(",") if i.strip()]
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON ({exc.msg})") from None
        except ValueError:
            raise CommandError("--comparisons takes comparison ids: 12,13,14") from None
        try:
            prompt = judge_prompt_for(opts["prompt"] or None, grading=opts["grading"])
            run = judge_run_create(
                judge=judge,
                study=study,
                prompt=prompt,
                grading=opts["grading"],
                comparisons=ids or None,
                params=params,
                seed=opts["seed"],
                batch_size=opts["batch_size"],
                max_attempts=opts["attempts"],
                inconsistent=opts["inconsistent"],
                enqueue=not opts["inline"],
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"judge run {run.pk}: {judge.name} on {study.name} with {run.prompt}, "
            f"{run.total} verdicts to ask for"
        )
        if opts["inline"]:
            judge_run_execute(run.pk)
        elif not opts["wait"]:
            self.stdout.write("queued; follow it in the admin")
            return
        run = self._follow(run)
        if run.status != JudgeRun.Status.SUCCEEDED:
            raise CommandError(f"judge run {run.pk} {run.status}: {run.error.strip()[-500:]}")
        self.stdout.write(
            self.style.SUCCESS(f"judge run {run.pk} succeeded: {run.done}/{run.total}")
        )
        summary = judge_run_summary(run)
        self.stdout.write(", ".join(f"{key} {value}" for key, value in summary.items()))

    def _follow(self, run: JudgeRun) -> JudgeRun:
        return follow(self, run, desc=f"judge run {run.pk}", unit="verdict")
