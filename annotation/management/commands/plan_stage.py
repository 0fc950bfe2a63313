"""Plan the next stage of a staged study (annotation/staging.py) once the stage before it is
full: a stage plan run on the spine (``--inline`` draws it here, ``--wait`` follows a worker).
The vote that fills a stage queues the same run itself; this is for staff."""

from __future__ import annotations

from django.core.management.base import CommandError

from annotation import staging
from annotation.models import Study
from evalsite.runs.commands import RunCommand


class Command(RunCommand):
    help = "Plan the next stage of a staged study (when every comparison of its stage is full)."

    def add_run_options(self, parser) -> None:
        parser.add_argument("study", help="the study's name")

    def create_run(self, opts: dict, *, enqueue: bool):
        study = Study.objects.filter(name=opts["study"]).first()
        if study is None:
            raise CommandError(f"no study named {opts['study']!r}")
        return staging.stage_plan_start(study=study, enqueue=enqueue)

    def describe(self, run) -> str:
        return f"stage plan {run.pk}: stage {run.stage} of {run.study.name} ({run.status})"

    def succeeded(self, run) -> str:
        return (
            f"stage {run.stage} of {run.study.name} drawn: {run.total} comparisons, "
            f"{run.votes} people's votes asked for"
        )
