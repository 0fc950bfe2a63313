from django.core.management.base import BaseCommand, CommandError

from benchmarks.engine.harness import HarnessMissing, require_lm_eval
from benchmarks.models import BenchmarkRun, Scoring
from benchmarks.results import results_table
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from generation.errors import ServiceError
from generation.models import LanguageModel
from generation.workers import follow


class Command(BaseCommand):
    help = (
        "Queue a benchmark run (model x lm-eval tasks) on the gpu worker; --wait shows progress "
        "per task, then the results as a table."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="registered model name")
        parser.add_argument(
            "--tasks", required=True, help="comma-separated task or group names (see --list)"
        )
        parser.add_argument("--num-fewshot", type=int, default=0)
        parser.add_argument(
            "--scoring",
            choices=Scoring.values,
            default=Scoring.LOGLIKELIHOOD,
            help="how multiple-choice tasks are scored (generative tasks always generate)",
        )
        parser.add_argument("--limit", type=int, default=None, help="examples per task")
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--wait", action="store_true", help="wait and show a progress bar")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="run in this process instead of a worker (needs lm_eval here)",
        )

    def handle(self, *args, **opts):
        model = LanguageModel.objects.filter(name=opts["model"]).first()
        if model is None:
            raise CommandError(f"no model named {opts['model']!r}")
        if opts["inline"]:
            try:
                require_lm_eval()
            except HarnessMissing as exc:
                raise CommandError(str(exc)) from None
        try:
            run = benchmark_run_create(
                model=model,
                tasks=[t for t in opts["tasks"].split(",") if t.strip()],
                num_fewshot=opts["num_fewshot"],
                scoring=opts["scoring"],
                limit=opts["limit"],
                batch_size=opts["batch_size"],
                seed=opts["seed"],
                enqueue=not opts["inline"],
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"benchmark run {run.pk}: {model.name} on {', '.join(run.tasks)} "
            f"({run.scoring}, {run.num_fewshot}-shot, limit {run.limit or 'none'})"
        )
        if opts["inline"]:
            benchmark_run_execute(run.pk)
        elif not opts["wait"]:
            self.stdout.write("queued; follow it in the admin")
            return
        run = self._follow(run)
        if run.status != BenchmarkRun.Status.SUCCEEDED:
            raise CommandError(f"benchmark run {run.pk} {run.status}: {run.error.strip()[-500:]}")
        self.stdout.write(
            self.style.SUCCESS(f"benchmark run {run.pk} succeeded: {run.done}/{run.total} tasks")
        )
        self.stdout.write(results_table(run))

    def _follow(self, run: BenchmarkRun) -> BenchmarkRun:
        return follow(self, run, desc=f"benchmark run {run.pk}", unit="task")
