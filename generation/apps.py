from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        # Registers the data-set augmentation's finish hook (runs.on_run_succeeded) in every
        # process, the worker included, whatever else it imports.
        from .training import data  # noqa: F401
