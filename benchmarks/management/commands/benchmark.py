from django.core.management.base import CommandError

from benchmarks.engine.harness import HarnessMissing, require_lm_eval
from benchmarks.models import Scoring
from benchmarks.results import results_table
from benchmarks.runs import benchmark_run_create
from evalsite.runs.commands import RunCommand
from generation.management.options import named
from generation.models import LanguageModel


class Command(RunCommand):
    help = (
        "Queue a benchmark run (model x lm-eval tasks) on the gpu worker; --wait shows progress "
        "per task, then the results as a table."
    )

    inline_help = "run in this process instead of a worker (needs lm_eval here)"
    splittable = True

    def add_run_options(self, parser):
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

    def create_run(self, opts, *, enqueue):
        model = named(LanguageModel, opts["model"], "model")
        if opts["inline"]:
            try:
                require_lm_eval()
            except HarnessMissing as exc:
                raise CommandError(str(exc)) from None
        return benchmark_run_create(
            model=model,
            tasks=[t for t in opts["tasks"].split(",") if t.strip()],
            num_fewshot=opts["num_fewshot"],
            scoring=opts["scoring"],
            limit=opts["limit"],
            batch_size=opts["batch_size"],
            seed=opts["seed"],
            enqueue=enqueue,
            shards=opts["shards"],
        )

    def describe(self, run) -> str:
        return (
            f"benchmark run {run.pk}: {run.model.name} on {', '.join(run.tasks)} "
            f"({run.scoring}, {run.num_fewshot}-shot, limit {run.limit or 'none'})"
        )

    def report(self, run) -> None:
        self.stdout.write(results_table(run))
