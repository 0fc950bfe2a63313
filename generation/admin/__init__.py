"""The generation admin, one module per admin; importing them registers them with the site
(``annotation.admin`` extends the GenerationRun admin registered here)."""

from . import (  # noqa: F401
    datasets,
    finetune,
    generation_runs,
    language_models,
    prompt_sets,
    templates,
)
