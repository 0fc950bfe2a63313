from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "sweeps"
    verbose_name = "Fine-tune sweeps"

    def ready(self) -> None:
        # A sweep moves on when any of its runs finishes (the spine's lifecycle calls the hook in
        # the worker that held the run); registered in every process, the worker included.
        from evalsite.runs import lifecycle, listing

        from . import progress, work

        lifecycle.on_run_finished(progress.run_finished)
        # Sweeps in the staff home's and the staff API's list of all work.
        listing.work_source_register(work.SWEEPS)
