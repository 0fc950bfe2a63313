from django.core.management.base import CommandError

from benchmarks.catalog import task_rows
from benchmarks.engine.harness import HarnessMissing, require_lm_eval
from benchmarks.models import PromptMode, Scoring
from benchmarks.results import catalogue_table, results_table
from benchmarks.runs import benchmark_run_create
from evalsite.runs.commands import RunCommand
from generation.management.options import named
from generation.models import LanguageModel


class Command(RunCommand):
    help = (
        "Queue a benchmark run (model x lm-eval tasks) on the gpu worker; --wait shows progress "
        "per task, then the results as a table. --list prints the tasks a run may name."
    )

    inline_help = "run in this process instead of a worker (needs lm_eval here)"
    splittable = True

    def add_run_options(self, parser):
        parser.add_argument(
            "--list",
            action="store_true",
            help="print the task catalogue (tasks, groups, and task files that cannot be read) "
            "and exit",
        )
        parser.add_argument("--model", help="registered model name")
        parser.add_argument("--tasks", help="comma-separated task or group names (see --list)")
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
        parser.add_argument(
            "--prompt",
            choices=PromptMode.values,
            default=PromptMode.TEMPLATE,
            help="template: each example rendered by the model's prompt template, as generation "
            "does (default); raw: the task's own text (models with weights only)",
        )
        parser.add_argument(
            "--system-instruction",
            default="",
            help="system prompt for every example (default: the template's own)",
        )
        parser.add_argument(
            "--fewshot-in-one-turn",
            action="store_true",
            help="few-shot examples inside the question's turn instead of as earlier turns",
        )

    def handle(self, *args, **opts):
        if opts["list"]:
            self.stdout.write(catalogue_table(task_rows()))
            return
        missing = [f"--{name}" for name in ("model", "tasks") if not opts[name]]
        if missing:
            raise CommandError(f"{' and '.join(missing)} required (or --list)")
        super().handle(*args, **opts)

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
            prompt=opts["prompt"],
            system_instruction=opts["system_instruction"],
            fewshot_as_multiturn=not opts["fewshot_in_one_turn"],
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
