import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evolution.engine.operations import OPERATIONS
from evolution.teaching import evolver_train
from generation.errors import ServiceError
from generation.models import FineTuneRun, LanguageModel
from generation.training.finetune import finetune_run_execute
from generation.workers import follow


class Command(BaseCommand):
    help = (
        "Teach a model to evolve instructions: (instruction, evolved) pairs from a JSONL file "
        "become a data set (rewrite prompt -> evolved instruction) and a LoRA fine-tune of --base "
        "on it; the registered result can be passed to `evolve --model`."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--pairs", required=True, help="JSONL: instruction, evolved[, operation]"
        )
        parser.add_argument("--base", required=True, help="registered model to fine-tune")
        parser.add_argument("--name", default="", help="name of the resulting model")
        parser.add_argument(
            "--operation",
            choices=OPERATIONS,
            default="",
            help="operation of pairs that name none (default: chosen per line with --seed)",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--params",
            default="{}",
            help='fine-tune hyper-parameters as JSON, e.g. {"epochs": 20, "learning_rate": 0.002}',
        )
        parser.add_argument("--wait", action="store_true", help="wait and show a progress bar")
        parser.add_argument("--inline", action="store_true", help="train in this process")

    def handle(self, *args, **opts):
        base = LanguageModel.objects.filter(name=opts["base"]).first()
        if base is None:
            raise CommandError(f"--base: no model named {opts['base']!r}")
        path = Path(opts["pairs"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"--pairs: cannot read {path}: {exc.strerror}") from None
        try:
            params = json.loads(opts["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON ({exc.msg})") from None
        try:
            dataset, run = evolver_train(
                data=data,
                filename=str(path),
                base_model=base,
                name=opts["name"],
                operation=opts["operation"],
                seed=opts["seed"],
                params=params,
                enqueue=not opts["inline"],
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"data set {dataset.name}: {dataset.examples.count()} pairs "
            f"({', '.join(f'{op} {n}' for op, n in sorted(dataset.stats['operations'].items()))})"
        )
        self.stdout.write(
            f"fine-tune run {run.pk}: LoRA on {base.name}, about {run.total_steps} steps"
        )
        if opts["inline"]:
            finetune_run_execute(run_id=run.pk)
        elif not opts["wait"]:
            self.stdout.write("queued; follow it in the admin")
            return
        run = self._follow(run)
        if run.status != FineTuneRun.Status.SUCCEEDED:
            raise CommandError(f"fine-tune run {run.pk} {run.status}: {run.error.strip()[-500:]}")
        self.stdout.write(
            self.style.SUCCESS(
                f"evolver {run.result_model.name!r} registered; use it with "
                f"`manage.py evolve --model {run.result_model.name} ...`"
            )
        )

    def _follow(self, run: FineTuneRun) -> FineTuneRun:
        return follow(
            self, run, desc=f"fine-tune {run.pk}", unit="step", done="step", total="total_steps"
        )
