"""Who consumes which queue is the spine's (evalsite/runs/workers.py); kept for imports."""

from evalsite.runs.workers import *  # noqa: F403
from evalsite.runs.workers import follow, no_worker_message, run_queue  # noqa: F401
