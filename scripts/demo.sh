#!/usr/bin/env bash
# `make demo`: the app on its embedded defaults (SQLite file, filesystem broker under var/),
# one Celery worker beside the web server, demo data, users, then the server on :8000.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VAR="${VAR_DIR:-var}"
MODELS="${MODEL_STORAGE:-$VAR/models}"
mkdir -p "$VAR"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM

# Independent steps side by side (on a later run each is mostly Python starting up): the
# database, the static files, and the demo's three tiny models (seeds 0, 1, 2) where demo_setup
# looks for them. The models are built once per machine into a cache shared with the tests
# ($TINY_MODEL_CACHE, else ~/.cache/pairwise-eval/tiny), side by side with their progress
# printed, and copied from it into a var/ that lacks them.
$PY manage.py migrate --noinput -v 0 &
migrate=$!
$PY manage.py collectstatic --noinput -v 0 &
setup=("$!")
for seed in 0 1 2; do
  if [ ! -f "$MODELS/tiny-neox-seed$seed/tiny_build.json" ]; then
    $PY manage.py create_tiny_model "$MODELS/tiny-neox-seed{seed}" --seed 0 --seed 1 --seed 2 &
    setup+=("$!")
    break
  fi
done
pids+=("$migrate" "${setup[@]}")
wait "$migrate"

# One worker for both queues: generation, fine-tuning and judging (gpu) and the rest (default),
# with the periodic stale-run check (-B). Its log is $VAR/worker.log.
$PY -m celery -A evalsite worker -Q gpu,default --concurrency 1 -B \
  -s "$VAR/celerybeat-schedule" --loglevel INFO >"$VAR/worker.log" 2>&1 &
pids+=("$!")
for pid in "${setup[@]}"; do
  wait "$pid"
done

$PY manage.py demo_setup
echo
echo "Serving on http://127.0.0.1:8000/ (admin: /admin/, annotators: /annotate/). Ctrl-C stops."
$PY manage.py runserver 127.0.0.1:8000 --noreload
