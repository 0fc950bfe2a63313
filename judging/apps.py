from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "judging"
    verbose_name = "Judging"

    def ready(self) -> None:
        # Routing studies follow their latest succeeded pairwise judge run (judging/routing.py);
        # registered in every process, the worker included.
        from . import routing

        routing.register()
        # The judge's section of every study's results page and export.
        from . import results_section

        results_section.register()
        # Registers the judge run kind on the spine in every process.
        from . import runs  # noqa: F401
