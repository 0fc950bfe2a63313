from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "evalsite.runs"
    label = "runs"
    verbose_name = "Background runs"

    def ready(self) -> None:
        from . import provenance

        provenance.guard_connect()
