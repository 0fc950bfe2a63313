from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "judging"
    verbose_name = "Judging"

    def ready(self) -> None:
        # Routing studies follow their latest succeeded pairwise judge run (judging/routing.py);
        # registered in every process, the worker included.
        from . import routing

        routing.register()

        from generation.lifecycle import stale_requeuer_register

        from .runs import judge_runs_requeue_stale

        stale_requeuer_register(judge_runs_requeue_stale)
