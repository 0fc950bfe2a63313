import argparse
import os

from django.core.management.base import CommandError
from django.db import transaction
from tqdm import tqdm

from evalsite.errors import ServiceError
from evalsite.runs.commands import RunCommand
from evalsite.trackers import TRACKERS
from generation.engine.params import FINETUNE, Param
from generation.importers import ImportFormatError
from generation.lineage import lineage_text, model_lineage
from generation.management.options import named
from generation.models import FineTuneRun, InstructionDataset, LanguageModel
from generation.training.finetune import (
    finetune_run_create,
    finetune_run_execute,
    finetune_run_resume,
)
from generation.training.overlap import finetune_overlap
from generation.training.preferences import preference_dataset_resolve, preferences_from_study


def _dest(param: Param) -> str:
    """The option's name in the parsed options (``--grad-accum`` -> ``grad_accum``)."""
    return param.option or param.name


def _option(param: Param) -> str:
    return "--" + _dest(param).replace("_", "-")


class _Dataset(argparse.Action):
    """--dataset NAME starts an entry of the mix; a --rows N after it sets its row count."""

    def __call__(self, parser, namespace, values, option_string=None):
        mix = getattr(namespace, "mix", None) or []
        if option_string == "--dataset":
            mix.append([values, None])
        elif not mix:
            parser.error("--rows must follow the --dataset it applies to")
        elif mix[-1][1] is not None:
            parser.error(f"--rows given twice for data set {mix[-1][0]!r}")
        else:
            mix[-1][1] = values
        namespace.mix = mix


class Command(RunCommand):
    help = (
        "Fine-tune a registered model on one or more instruction data sets (LoRA by default) on "
        "the gpu queue; --wait shows a progress bar, --inline trains in this process. With "
        "--run ID --inline, trains an existing run here (e.g. under `accelerate launch`)."
    )

    inline_help = "train in this process instead of a worker (no broker needed)"

    def add_run_options(self, parser):
        parser.add_argument("--base", help="registered model to start from")
        parser.add_argument(
            "--dataset", action=_Dataset, dest="mix", metavar="NAME", help="repeat for a mix"
        )
        parser.add_argument(
            "--rows",
            action=_Dataset,
            dest="mix",
            type=int,
            metavar="N",
            help="rows to sample (with --seed) from the --dataset before it; default all",
        )
        parser.add_argument("--method", default="lora", choices=FineTuneRun.Method.values)
        prefs = parser.add_mutually_exclusive_group()
        prefs.add_argument(
            "--preferences",
            metavar="FILE|NAME",
            help="--method dpo: a preference data set, or a JSONL file (prompt, chosen, rejected)",
        )
        prefs.add_argument(
            "--preferences-from",
            metavar="STUDY",
            help="--method dpo: export this study's votes as pairs now and train on them",
        )
        parser.add_argument("--model-name", default="", help="name of the resulting model")
        parser.add_argument(
            "--report-to",
            default="",
            choices=TRACKERS,
            help="experiment tracker the loss also goes to (default: EXPERIMENT_TRACKER)",
        )
        # One option per hyper-parameter; unset ones take the run model's defaults.
        for param in FINETUNE:
            if param.kind is bool:
                parser.add_argument(_option(param), action="store_true", default=None)
            elif param.kind is list:
                parser.add_argument(_option(param), help=f"{param.help}, comma-separated")
            else:
                parser.add_argument(_option(param), type=param.kind, help=param.name)
        parser.add_argument(
            "--no-enqueue", action="store_true", help="only record the run and print its id"
        )
        parser.add_argument("--run", type=int, help="an existing run to train (with --inline)")

    def handle(self, *args, **opts):
        if opts["run"]:
            self.follow_run(self._existing(opts["run"], inline=opts["inline"]), opts)
        elif opts["no_enqueue"]:
            self.stdout.write(self.describe(self.create_run(opts, enqueue=False)))
        else:
            super().handle(*args, **opts)

    def _existing(self, run_id: int, *, inline: bool) -> FineTuneRun:
        """``--run ID --inline``: an existing run to train here (a failed or cancelled one is
        resumed from its last checkpoint by the main process, not by a worker)."""
        run = FineTuneRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"no fine-tune run {run_id}")
        if not inline:
            raise CommandError("--run trains an existing run in this process: add --inline")
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0 and run.status in (FineTuneRun.Status.FAILED, FineTuneRun.Status.CANCELLED):
            run = finetune_run_resume(run=run, enqueue=False)
        return run

    def describe(self, run) -> str:
        line = (
            f"fine-tune run {run.pk}: {run.base_model.name}, {run.method}, "
            f"about {run.total_steps} steps"
        )
        warnings = [f"warning: {o.message()}" for o in finetune_overlap(run)]
        return "\n".join([line, *(self.style.WARNING(w) for w in warnings)])

    def report(self, run) -> None:
        self.stdout.write(f"model {run.result_model.name!r} registered")
        self.stdout.write("lineage: " + lineage_text(model_lineage(run.result_model)))
        if "margin_after" in run.metrics:
            m = run.metrics
            self.stdout.write(
                f"held-out margin (log p(chosen) - log p(rejected), mean of "
                f"{m['heldout_pairs']} pairs): {m['margin_before']:.3f} before, "
                f"{m['margin_after']:.3f} after"
            )

    def create_run(self, opts, *, enqueue) -> FineTuneRun:
        dpo = opts["method"] == FineTuneRun.Method.DPO
        if not dpo and (opts["preferences"] or opts["preferences_from"]):
            raise CommandError("--preferences and --preferences-from are for --method dpo")
        if not opts["base"] or not (opts.get("mix") or dpo):
            raise CommandError("give --base and at least one --dataset (or --run ID --inline)")
        if dpo and not (opts["preferences"] or opts["preferences_from"]):
            raise CommandError("--method dpo needs --preferences FILE|NAME or --preferences-from")
        base = named(LanguageModel, opts["base"], "model")
        mix = [
            (named(InstructionDataset, name, "instruction data set"), rows)
            for name, rows in opts.get("mix") or ()
        ]
        params = {}
        for param in FINETUNE:
            value = opts[_dest(param)]
            if value and param.kind is list:
                params[param.name] = [m.strip() for m in value.split(",")]
            elif value is not None and param.kind is not list:
                params[param.name] = value
        try:
            # One transaction: a run refused after the pairs were exported or imported keeps
            # none of them (the run is enqueued when it commits).
            with transaction.atomic():
                preferences = None
                if opts["preferences_from"]:
                    # Rendered with the base model's template: the model being tuned.
                    preferences = preferences_from_study(opts["preferences_from"], model=base)
                elif opts["preferences"]:
                    preferences = preference_dataset_resolve(opts["preferences"])
                run = finetune_run_create(
                    base_model=base,
                    datasets=mix,
                    method=opts["method"],
                    params=params,
                    model_name=opts["model_name"],
                    preferences=preferences,
                    report_to=opts["report_to"],
                    enqueue=enqueue,
                )
        except (ServiceError, ImportFormatError) as exc:
            raise CommandError(str(exc)) from None
        if opts["preferences_from"]:
            self.stdout.write(
                f"preference data set {preferences.name!r}: {preferences.pairs.count()} "
                f"pairs from the votes of study {preferences.source_study_name!r}"
            )
        return run

    def execute_here(self, run) -> None:
        """--inline: train here, with a progress bar of steps and the loss."""
        with tqdm(total=run.total_steps, desc=f"fine-tune {run.pk}", unit="step") as bar:

            def on_progress(step: int, total: int, loss: float | None) -> None:
                bar.total = total
                bar.update(step - bar.n)
                if loss is not None:
                    bar.set_postfix_str(f"loss {loss:.4f}")

            finetune_run_execute(run_id=run.pk, on_progress=on_progress)

    def wait_note(self, run) -> str:
        """--wait: the status, and the last training loss once there is one."""
        last = run.log_entries.filter(kind="train").order_by("-step").first()
        return f"{run.status}, loss {last.loss:.4f}" if last else run.status
