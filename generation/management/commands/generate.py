import json

from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError
from generation.models import GenerationRun, LanguageModel, PromptSet
from generation.runs import generation_run_create, generation_run_execute
from generation.workers import follow


class Command(BaseCommand):
    help = (
        "Queue a generation run (model x prompt set): weights on the gpu queue, endpoints on "
        "default; --wait shows progress."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="registered model name")
        parser.add_argument("--prompt-set", required=True)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument(
            "--params", default="{}", help="overrides as JSON, e.g. '{\"max_new_tokens\": 128}'"
        )
        parser.add_argument("--wait", action="store_true", help="wait and show a progress bar")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="generate in this process instead of a worker (no broker needed)",
        )

    def handle(self, *args, **opts):
        model = LanguageModel.objects.filter(name=opts["model"]).first()
        if model is None:
            raise CommandError(f"no model named {opts['model']!r}")
        prompt_set = PromptSet.objects.filter(name=opts["prompt_set"]).first()
        if prompt_set is None:
            raise CommandError(f"no prompt set named {opts['prompt_set']!r}")
        try:
            params = json.loads(opts["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON ({exc.msg})") from None
        try:
            run = generation_run_create(
                model=model,
                prompt_set=prompt_set,
                params=params,
                seed=opts["seed"],
                batch_size=opts["batch_size"],
                enqueue=not opts["inline"],
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"run {run.pk}: {model.name} on {prompt_set.name}, {run.total} answers to make"
        )
        if opts["inline"]:
            generation_run_execute(run_id=run.pk)
        elif not opts["wait"]:
            self.stdout.write(f"queued; follow it in the admin or with GET /api/runs/{run.pk}/")
            return
        run = self._follow(run)
        if run.status != GenerationRun.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error.strip()[-500:]}")
        self.stdout.write(self.style.SUCCESS(f"run {run.pk} succeeded: {run.done}/{run.total}"))

    def _follow(self, run: GenerationRun) -> GenerationRun:
        return follow(self, run, desc=f"run {run.pk}", unit="answer")
