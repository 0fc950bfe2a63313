import json

from django.core.management.base import CommandError

from evalsite.runs.commands import RunCommand
from evolution.engine.operations import OPERATIONS
from evolution.runs import evolution_run_create
from evolution.summary import evolution_totals
from generation.models import InstructionDataset, LanguageModel


def _model(name: str, option: str) -> LanguageModel:
    model = LanguageModel.objects.filter(name=name).first()
    if model is None:
        raise CommandError(f"{option}: no model named {name!r}")
    return model


def _json(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise CommandError(f"{option} must be a JSON object")
    return value


class Command(RunCommand):
    help = (
        "Queue an Evol-Instruct run: rewrite a data set's instructions with a model for N rounds, "
        "drop failed evolutions, answer the survivors, and write them as a new data set; --wait "
        "shows progress, then the counts."
    )

    inline_help = "run in this process instead of a worker"

    def add_run_options(self, parser):
        parser.add_argument("--dataset", required=True, help="instruction data set to evolve")
        parser.add_argument("--model", required=True, help="registered model that rewrites")
        parser.add_argument(
            "--answer-model", help="registered model that answers (default: --model)"
        )
        parser.add_argument("--judge", help="model asked whether an evolution adds information")
        parser.add_argument("--rounds", type=int, default=1)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument(
            "--name", default="", help="data set to write (default: <dataset>-evol-<run>)"
        )
        parser.add_argument("--params", default="{}", help="the evolver's decoding as JSON")
        parser.add_argument("--answer-params", default="{}", help="the answer model's decoding")
        parser.add_argument(
            "--rules",
            default="{}",
            help='elimination thresholds as JSON, e.g. {"near_duplicate": 1.0}',
        )

    def create_run(self, opts, *, enqueue):
        source = InstructionDataset.objects.filter(name=opts["dataset"]).first()
        if source is None:
            raise CommandError(f"--dataset: no instruction data set named {opts['dataset']!r}")
        return evolution_run_create(
            source=source,
            model=_model(opts["model"], "--model"),
            answer_model=(
                _model(opts["answer_model"], "--answer-model") if opts["answer_model"] else None
            ),
            judge=_model(opts["judge"], "--judge") if opts["judge"] else None,
            rounds=opts["rounds"],
            seed=opts["seed"],
            batch_size=opts["batch_size"],
            params=_json(opts["params"], "--params"),
            answer_params=_json(opts["answer_params"], "--answer-params"),
            rules=_json(opts["rules"], "--rules"),
            name=opts["name"],
            enqueue=enqueue,
        )

    def describe(self, run) -> str:
        return (
            f"evolution run {run.pk}: {run.model.name} on {run.source.name}, {run.rounds} "
            f"round(s), up to {run.total} evolutions; writes {run.name}"
        )

    def succeeded(self, run) -> str:
        totals = evolution_totals(run.counts)
        return f"evolution run {run.pk} succeeded: {totals['kept']} of {totals['items']} kept"

    def report(self, run) -> None:
        for op in [o for o in OPERATIONS if o in run.counts]:
            entry = run.counts[op]
            dropped = ", ".join(f"{rule} {n}" for rule, n in sorted(entry["dropped"].items()))
            self.stdout.write(
                f"  {op}: kept {entry['kept']}/{entry['items']}"
                + (f"; dropped: {dropped}" if dropped else "")
            )
        if run.result_id:
            self.stdout.write(f"data set {run.result.name}: {run.result.examples.count()} rows")
        else:
            self.stdout.write(run.error)
