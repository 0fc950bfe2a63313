"""One process of a fine-tune run launched over several (``python -m generation.training.launched
RUN_ID WORKER`` under torchrun or ``accelerate launch``; see processes.py).

Rank 0 trains and acts for ``WORKER``, the worker that holds the run: it writes the log,
progress and checkpoints and registers the result. The other ranks only train. A rank that
fails writes its message where the worker reads it, then exits non-zero (the launcher then
stops the others).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    django.setup()

    from evalsite.runs.lifecycle import failure_message

    from .finetune import finetune_run_train_launched
    from .processes import ERROR_FILE, run_dir

    run_id, worker = int(argv[0]), argv[1]
    rank = int(os.environ.get("RANK", "0"))
    try:
        finetune_run_train_launched(run_id=run_id, worker=worker, rank=rank)
    except Exception as exc:
        from ..models import FineTuneRun

        run = FineTuneRun.objects.get(pk=run_id)
        (run_dir(run) / ERROR_FILE.format(rank=rank)).write_text(failure_message(exc))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
