"""Judge prompts: versioned rows (versions.py) and prompts loaded from files (files.py).

Callers import from here: ``judge_presets_install``, ``judge_prompt_for``, ``as_judge_template``,
the create / update / delete services, and ``judge_prompt_load`` for a file.
"""

from .files import judge_prompt_load, judge_prompts_import, parse_judge_prompt_file
from .versions import (
    PROMPT_FIELDS,
    RENDERED_FIELDS,
    SAMPLE,
    as_judge_template,
    judge_presets_install,
    judge_prompt_create,
    judge_prompt_delete,
    judge_prompt_delete_problem,
    judge_prompt_fields_check,
    judge_prompt_for,
    judge_prompt_in_use,
    judge_prompt_latest,
    judge_prompt_names,
    judge_prompt_preview,
    judge_prompt_problems,
    judge_prompt_save,
    judge_prompt_update,
)

__all__ = [
    "PROMPT_FIELDS",
    "RENDERED_FIELDS",
    "SAMPLE",
    "as_judge_template",
    "judge_presets_install",
    "judge_prompt_create",
    "judge_prompt_delete",
    "judge_prompt_delete_problem",
    "judge_prompt_fields_check",
    "judge_prompt_for",
    "judge_prompt_in_use",
    "judge_prompt_latest",
    "judge_prompt_load",
    "judge_prompt_names",
    "judge_prompt_preview",
    "judge_prompt_problems",
    "judge_prompt_save",
    "judge_prompt_update",
    "judge_prompts_import",
    "parse_judge_prompt_file",
]
