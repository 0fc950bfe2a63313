from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        # generation never imports annotation: it reaches a study's votes through this hook
        # (`finetune --method dpo --preferences-from STUDY`).
        from generation.training.preferences import preference_source_register

        from . import preferences_admin
        from .preferences import preference_source

        preference_source_register(preference_source)
        preferences_admin.install()
        # The staged design's stage plans are a run kind on the spine, in every process (the
        # worker included).
        from . import staging  # noqa: F401
