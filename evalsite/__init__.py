import os

# Threaded BLAS makes the small fits this app runs far slower on a small shared machine
# (DESIGN.md, Ranking). Set before numpy is imported anywhere in the process.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
