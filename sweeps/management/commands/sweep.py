import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from evalsite.errors import ServiceError
from evalsite.runs.workers import QueueWatch, poll_seconds, say
from generation.management.options import json_object, named
from generation.models import FineTuneRun, InstructionDataset, LanguageModel, PromptSet
from judging.models import JudgePrompt
from sweeps.grid import parse_values
from sweeps.models import Sweep, SweepCell
from sweeps.progress import sweep_advance
from sweeps.services import sweep_create, sweep_overlap
from sweeps.tables import sweep_cells

NOT_OBJECT = "{option} takes a JSON object"


def _mix(text: str) -> list[InstructionDataset]:
    """A data set by name, or several joined with '+' trained on together."""
    exact = InstructionDataset.objects.filter(name=text).first()
    if exact is not None:
        return [exact]
    return [
        named(InstructionDataset, part.strip(), "instruction data set") for part in text.split("+")
    ]


def _values(text: str, axis: str, kind: type, allow_all: bool = False) -> list:
    try:
        return parse_values(text, axis=axis, kind=kind, allow_all=allow_all)
    except ValueError as exc:
        raise CommandError(f"--{axis.split()[0]}: {exc}") from None


def _cell_line(cell: dict) -> str:
    rows = "all" if cell["rows"] is None else cell["rows"]
    values = (
        f"cell {cell['position']} ({cell['mix']}, rows {rows}, lr {cell['learning_rate']:g}, "
        f"{cell['epochs']:g} ep, {cell['method']})"
    )
    if cell["score"] is not None:
        mark = "  <- best" if cell["best"] else ""
        return (
            f"{values}: {cell['score']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}] "
            f"from {cell['counted']}{mark}"
        )
    return f"{values}: {cell['status']}" + (f" ({cell['error'][-300:]})" if cell["error"] else "")


class Command(BaseCommand):
    help = (
        "Start a fine-tune sweep: one fine-tune run per combination of data sets, rows, learning "
        "rates, epochs and methods; each tuned model answers the prompt set and is judged "
        "against the base model (or graded). --wait follows every cell, then prints the grid."
    )

    def add_arguments(self, parser):
        parser.add_argument("--base", required=True, help="registered model to fine-tune")
        parser.add_argument(
            "--dataset",
            action="append",
            required=True,
            metavar="NAME",
            help="an instruction data set (repeat for more; A+B trains on A and B together)",
        )
        parser.add_argument("--rows", default="all", help="rows per data set, e.g. 100,400,all")
        parser.add_argument("--lr", required=True, help="learning rates, e.g. 1e-4,3e-4")
        parser.add_argument("--epochs", default="1", help="epochs, e.g. 1,3")
        parser.add_argument("--method", default="lora", help="lora, full or lora,full")
        parser.add_argument("--max-steps", type=int, default=0, help="stop each run early")
        parser.add_argument(
            "--params",
            default="{}",
            help="other fine-tune hyper-parameters as JSON, e.g. '{\"batch_size\": 2}'",
        )
        parser.add_argument("--prompt-set", required=True, help="prompt set the models answer")
        parser.add_argument("--max-new-tokens", type=int, help="answers' length")
        parser.add_argument("--judge", required=True, help="registered model of the judge")
        parser.add_argument("--mode", choices=Sweep.Mode.values, default=Sweep.Mode.PAIRWISE)
        parser.add_argument("--judge-prompt", help="judge prompt name (its latest version)")
        parser.add_argument(
            "--judge-params",
            default="{}",
            help="the judge's decoding as JSON, e.g. '{\"max_new_tokens\": 48}'",
        )
        parser.add_argument(
            "--study", action="store_true", help="at the end, a draft study for people"
        )
        parser.add_argument("--name", help="sweep name (default: sweep-<base>-<time>)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--wait", action="store_true", help="follow the cells until done")

    def handle(self, *args, **opts):
        base = named(LanguageModel, opts["base"], "model")
        judge = named(LanguageModel, opts["judge"], "model")
        prompt_set = named(PromptSet, opts["prompt_set"], "prompt set")
        judge_prompt = None
        if opts["judge_prompt"]:
            judge_prompt = (
                JudgePrompt.objects.filter(name=opts["judge_prompt"]).order_by("-version").first()
            )
            if judge_prompt is None:
                raise CommandError(f"no judge prompt named {opts['judge_prompt']!r}")
        params = json_object(opts["params"], "--params", NOT_OBJECT)
        judge_params = json_object(opts["judge_params"], "--judge-params", NOT_OBJECT)
        if opts["max_steps"]:
            params["max_steps"] = opts["max_steps"]
        name = opts["name"] or f"sweep-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            sweep = sweep_create(
                name=name,
                base_model=base,
                mixes=[_mix(text) for text in opts["dataset"]],
                rows=_values(opts["rows"], "rows", int, allow_all=True),
                learning_rates=_values(opts["lr"], "lr", float),
                epochs=_values(opts["epochs"], "epochs", float),
                methods=[m.strip() for m in opts["method"].split(",") if m.strip()],
                params=params,
                prompt_set=prompt_set,
                generation_params=(
                    {"max_new_tokens": opts["max_new_tokens"]} if opts["max_new_tokens"] else {}
                ),
                judge=judge,
                mode=opts["mode"],
                judge_prompt=judge_prompt,
                judge_params=judge_params,
                human_study=opts["study"],
                seed=opts["seed"],
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        cells = sweep_cells(sweep)
        self.stdout.write(
            f"sweep {sweep.pk} {sweep.name!r}: {len(cells)} cells of {base.name}, answers on "
            f"{prompt_set.name} (base: generation run {sweep.base_run_id}), judge {judge.name} "
            f"({sweep.mode}, {sweep.judge_prompt})"
        )
        for cell in cells:
            self.stdout.write(f"  {_cell_line(cell)}: fine-tune run {cell['finetune_run']}")
        for overlap in sweep_overlap(sweep):
            self.stdout.write(self.style.WARNING(f"warning: {overlap.message()}"))
        if not opts["wait"]:
            self.stdout.write(f"queued; follow it at /staff/sweeps/{sweep.pk}/")
            return
        sweep = self._follow(sweep)
        self.stdout.write(f"sweep {sweep.pk} {sweep.status}")
        cells = sweep_cells(sweep)
        for cell in cells:
            self.stdout.write(f"  {_cell_line(cell)}")
        scored = [c for c in cells if c["score"] is not None]
        if len(scored) > 1 and not any(c["best"] for c in cells):
            self.stdout.write("no single best cell: the top score is shared")
        if sweep.study_id:
            self.stdout.write(f"human study {sweep.study.name!r} (draft): open it in the admin")
        if sweep.error:
            self.stderr.write(self.style.WARNING(sweep.error))
        self.stdout.write(f"table and chart: /staff/sweeps/{sweep.pk}/")
        if sweep.status != Sweep.Status.SUCCEEDED:
            raise CommandError(f"sweep {sweep.pk} {sweep.status}: no cell was scored")

    def _follow(self, sweep: Sweep) -> Sweep:
        # The command advances the sweep itself on each poll (idempotent, under the sweep's
        # lock), so it goes on even when no `default` worker runs the advance task; the GPU
        # work still needs a `gpu` worker, and QueueWatch says when none takes it.
        first_tune = FineTuneRun.objects.get(pk=sweep.cells.order_by("position")[0].finetune_run_id)
        watches = [(sweep.base_run, QueueWatch(sweep.base_run, inline=False))]
        watches.append((first_tune, QueueWatch(first_tune, inline=False)))
        seen: dict[int, str] = {}
        total = sweep.cells.count()
        with tqdm(total=total, desc=f"sweep {sweep.pk}", unit="cell") as bar:
            while True:
                sweep = sweep_advance(sweep_id=sweep.pk)
                for run, watch in watches:
                    run.refresh_from_db()
                    for level, line in watch.check(run):
                        say(self, bar, level, line)
                for cell in sweep_cells(sweep):
                    if seen.get(cell["position"]) != cell["status"]:
                        seen[cell["position"]] = cell["status"]
                        say(self, bar, "info", _cell_line(cell))
                done = sum(s in SweepCell.DONE for s in seen.values())
                bar.update(done - bar.n)
                if sweep.status != Sweep.Status.RUNNING:
                    return sweep
                time.sleep(poll_seconds())
