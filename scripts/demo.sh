#!/usr/bin/env bash
# `make demo`: the app on its embedded defaults (SQLite file, filesystem broker under var/),
# one Celery worker beside the web server, demo data, users, then the server on :8000.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VAR="${VAR_DIR:-var}"
mkdir -p "$VAR"

$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0

# One worker for both queues: generation, fine-tuning and judging (gpu) and the rest (default),
# with the periodic stale-run check (-B). Its log is $VAR/worker.log.
$PY -m celery -A evalsite worker -Q gpu,default --concurrency 1 -B \
  -s "$VAR/celerybeat-schedule" --loglevel INFO >"$VAR/worker.log" 2>&1 &
worker=$!
trap 'kill "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true' EXIT INT TERM

# The demo's three tiny models (seeds 0, 1, 2), where demo_setup looks for them: built once per
# machine into a cache shared with the tests ($TINY_MODEL_CACHE, else ~/.cache/pairwise-eval/tiny),
# side by side with their progress printed, and copied from it on every later run.
$PY manage.py create_tiny_model "${MODEL_STORAGE:-$VAR/models}/tiny-neox-seed{seed}" \
  --seed 0 --seed 1 --seed 2

$PY manage.py demo_setup
echo
echo "Serving on http://127.0.0.1:8000/ (admin: /admin/, annotators: /annotate/). Ctrl-C stops."
$PY manage.py runserver 127.0.0.1:8000 --noreload
