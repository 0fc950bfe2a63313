from pathlib import Path

from django.core.management.base import CommandError

from evalsite.runs.commands import RunCommand
from evolution.engine.operations import OPERATIONS
from evolution.teaching import evolver_train
from generation.management.options import json_value, named
from generation.models import LanguageModel


class Command(RunCommand):
    help = (
        "Teach a model to evolve instructions: (instruction, evolved) pairs from a JSONL file "
        "become a data set (rewrite prompt -> evolved instruction) and a LoRA fine-tune of --base "
        "on it; the registered result can be passed to `evolve --model`."
    )

    inline_help = "train in this process"

    def add_run_options(self, parser):
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

    def create_run(self, opts, *, enqueue):
        """The fine-tune run of the evolver (the pairs' data set is made with it)."""
        base = named(LanguageModel, opts["base"], "model", "--base")
        path = Path(opts["pairs"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"--pairs: cannot read {path}: {exc.strerror}") from None
        params = json_value(opts["params"], "--params")
        _, run = evolver_train(
            data=data,
            filename=str(path),
            base_model=base,
            name=opts["name"],
            operation=opts["operation"],
            seed=opts["seed"],
            params=params,
            enqueue=enqueue,
        )
        return run

    def describe(self, run) -> str:
        dataset = run.datasets.get()  # the pairs, as evolver_train wrote them
        operations = sorted(dataset.stats["operations"].items())
        return (
            f"data set {dataset.name}: {dataset.examples.count()} pairs "
            f"({', '.join(f'{op} {n}' for op, n in operations)})\n"
            f"fine-tune run {run.pk}: LoRA on {run.base_model.name}, about {run.total_steps} steps"
        )

    def succeeded(self, run) -> str:
        name = run.result_model.name
        return f"evolver {name!r} registered; use it with `manage.py evolve --model {name} ...`"
