from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    name = "benchmarks"
    verbose_name = "Benchmarks"

    def ready(self) -> None:
        # Registers the run kind on the spine in every process, the web one included.
        from . import runs  # noqa: F401
