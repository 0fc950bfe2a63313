from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    name = "benchmarks"
    verbose_name = "Benchmarks"

    def ready(self) -> None:
        # Importing runs registers the run kind with generation's worker census (queue, label)
        # in every process, the web one included; its stale-run requeue joins the periodic check.
        from generation.lifecycle import stale_requeuer_register

        from .runs import benchmark_runs_requeue_stale

        stale_requeuer_register(benchmark_runs_requeue_stale)
