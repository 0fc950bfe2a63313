from django.apps import AppConfig


class EvolutionConfig(AppConfig):
    name = "evolution"
    verbose_name = "Evol-Instruct"

    def ready(self) -> None:
        # Registers the run kind on the spine in every process, the web one included.
        from . import runs  # noqa: F401
