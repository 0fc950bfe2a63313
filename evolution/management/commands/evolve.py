from evalsite.runs.commands import RunCommand
from evolution.engine.operations import OPERATIONS
from evolution.runs import evolution_run_create
from evolution.summary import evolution_totals
from generation.management.options import json_object, named
from generation.models import InstructionDataset, LanguageModel


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
        source = named(InstructionDataset, opts["dataset"], "instruction data set", "--dataset")
        answer_model, judge = opts["answer_model"], opts["judge"]
        return evolution_run_create(
            source=source,
            model=named(LanguageModel, opts["model"], "model", "--model"),
            answer_model=(
                named(LanguageModel, answer_model, "model", "--answer-model")
                if answer_model
                else None
            ),
            judge=named(LanguageModel, judge, "model", "--judge") if judge else None,
            rounds=opts["rounds"],
            seed=opts["seed"],
            batch_size=opts["batch_size"],
            params=json_object(opts["params"], "--params"),
            answer_params=json_object(opts["answer_params"], "--answer-params"),
            rules=json_object(opts["rules"], "--rules"),
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
