import json

from django.core.management.base import CommandError

from annotation.models import Study
from evalsite.runs.commands import RunCommand
from generation.models import LanguageModel
from judging.models import JudgeRun
from judging.prompts import judge_prompt_for
from judging.runs import judge_run_create
from judging.summary import judge_run_summary


class Command(RunCommand):
    help = (
        "Queue a judge run (judge model x study): every comparison judged in both orders, or "
        "every answer graded with --grading; --wait shows progress, then the summary."
    )

    inline_help = "judge in this process instead of a worker (no broker needed)"
    splittable = True

    def add_run_options(self, parser):
        parser.add_argument("--study", required=True, help="study name")
        parser.add_argument("--judge", required=True, help="registered model name of the judge")
        parser.add_argument(
            "--prompt",
            "--template",
            dest="prompt",
            help="judge prompt name (its latest version); default ja_pairwise / ja_grading",
        )
        parser.add_argument(
            "--grading", action="store_true", help="grade each answer on the prompt's scale"
        )
        parser.add_argument(
            "--reference-prompt",
            help="judge prompt for questions of the reference categories (MT-Bench: "
            "mtbench_grading_reference, or FastChat's single-math-v1)",
        )
        parser.add_argument(
            "--reference-categories",
            default="math,reasoning,coding",
            help="comma-separated categories judged with --reference-prompt",
        )
        parser.add_argument(
            "--last-turn-only",
            action="store_true",
            help="show the judge only the last turn of each conversation (default: every turn)",
        )
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
            "--engine",
            default="auto",
            choices=JudgeRun.Engine.values,
            help="a local judge: vLLM or transformers (auto: vLLM on a GPU worker that has it)",
        )
        parser.add_argument(
            "--params",
            default="{}",
            help="judge decoding as JSON, e.g. '{\"max_new_tokens\": 128}'",
        )

    def create_run(self, opts, *, enqueue):
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
            return self._create(opts, study, judge, params, ids, enqueue)
        except ValueError as exc:  # a prompt that cannot render: one line, not a traceback
            raise CommandError(str(exc).splitlines()[0]) from None

    def _create(self, opts, study, judge, params, ids, enqueue):
        return judge_run_create(
            judge=judge,
            study=study,
            prompt=judge_prompt_for(opts["prompt"] or None, grading=opts["grading"]),
            grading=opts["grading"],
            comparisons=ids or None,
            params=params,
            seed=opts["seed"],
            batch_size=opts["batch_size"],
            max_attempts=opts["attempts"],
            inconsistent=opts["inconsistent"],
            reference_prompt=(
                judge_prompt_for(opts["reference_prompt"], grading=opts["grading"])
                if opts["reference_prompt"]
                else None
            ),
            reference_categories=[c for c in opts["reference_categories"].split(",") if c.strip()],
            last_turn_only=opts["last_turn_only"],
            engine=opts["engine"],
            enqueue=enqueue,
            shards=opts["shards"],
        )

    def describe(self, run) -> str:
        shown = "the last turn only" if run.last_turn_only else "every turn"
        return (
            f"judge run {run.pk}: {run.judge.name} on {run.study.name} with {run.prompt}, "
            f"{run.total} verdicts to ask for, showing {shown}"
        )

    def report(self, run) -> None:
        summary = judge_run_summary(run)
        self.stdout.write(", ".join(f"{key} {value}" for key, value in summary.items()))
