"""The base of every command that makes a run: ``--wait`` (a progress bar, then the outcome),
``--inline`` (execute it in this process, no worker needed) and their one-line errors."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from evalsite.errors import ServiceError

from . import lifecycle
from .kinds import kind_of
from .workers import follow

QUEUED = "queued; follow it in the admin, or with --wait"


class RunCommand(BaseCommand):
    """Subclasses add their options in ``add_run_options``, make the run in ``create_run``
    (through the kind's service, ``enqueue`` False for ``--inline``), and may say more in
    ``describe`` (the line printed once it is made), ``succeeded`` (the success line) and
    ``report`` (after it). With ``splittable``, the command takes ``--shards`` and passes
    ``opts["shards"]`` to its service."""

    wait_help = "wait and show a progress bar"
    inline_help = "execute it in this process instead of a worker (no broker needed)"
    # A kind whose runs can be split into shards (evalsite/runs/shards.py) takes --shards.
    splittable = False
    shards_help = (
        "split the run into this many shards that workers execute at once "
        "(default: one per worker consuming its queue; one with --inline)"
    )

    def add_arguments(self, parser):
        self.add_run_options(parser)
        if self.splittable:
            parser.add_argument("--shards", type=int, default=None, help=self.shards_help)
        parser.add_argument("--wait", action="store_true", help=self.wait_help)
        parser.add_argument("--inline", action="store_true", help=self.inline_help)

    def add_run_options(self, parser) -> None:
        """The command's own options."""

    def create_run(self, opts: dict, *, enqueue: bool):
        raise NotImplementedError

    def describe(self, run) -> str:
        kind = kind_of(run)
        return f"{kind.label} {run.pk}: {getattr(run, kind.total)} {kind.unit} to make"

    def report(self, run) -> None:
        """Lines printed after the success line."""

    def execute_here(self, run) -> None:
        """Execute the run in this process (``--inline``); a kind may show its own progress.
        (Not ``execute``: that is BaseCommand's entry point.)"""
        lifecycle.execute(kind_of(run), run.pk)

    def wait_note(self, run) -> str:
        """What the ``--wait`` bar shows after it: the status (a kind may add to it)."""
        return run.status

    def handle(self, *args, **opts):
        try:
            run = self.create_run(opts, enqueue=not opts["inline"])
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.describe(run))
        self.follow_run(run, opts)

    def follow_run(self, run, opts: dict):
        """Execute (``--inline``) or follow (``--wait``) a run that was just made or queued
        again; raise CommandError unless it succeeded. Without either, say it is queued."""
        kind = kind_of(run)
        if opts.get("inline"):
            self.execute_here(run)
            run.refresh_from_db()
        elif not opts.get("wait"):
            self.stdout.write(QUEUED)
            return run
        else:
            run = follow(
                self,
                run,
                desc=f"{kind.label} {run.pk}",
                unit=kind.unit.rstrip("s"),
                done=kind.done,
                total=kind.total,
                postfix=self.wait_note,
            )
        if run.status != run.Status.SUCCEEDED:
            error = run.error.strip()[-500:]
            outcome = f"{kind.label} {run.pk} {run.status}"
            raise CommandError(f"{outcome}: {error}" if error else outcome)
        self.stdout.write(self.style.SUCCESS(self.succeeded(run)))
        self.report(run)
        return run

    def succeeded(self, run) -> str:
        """The success line (a subclass may say what came of the run instead)."""
        kind = kind_of(run)
        done, total = getattr(run, kind.done), getattr(run, kind.total)
        return f"{kind.label} {run.pk} succeeded: {done}/{total} {kind.unit}"
