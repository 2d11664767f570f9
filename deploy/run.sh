#!/usr/bin/env bash
# `make run`: gunicorn (DEBUG off, static files through whitenoise), one Celery worker and one
# Celery beat, all in this process group. Ctrl-C or one SIGTERM to the group stops all of them
# within 10 s: each gets SIGTERM, and whatever still runs after 6 s gets SIGKILL (tasks are
# acknowledged late, so a task cut short is delivered again).
set -uo pipefail
PY=${PY:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
# Plain http on this machine: cookies must not be marked Secure, and no HSTS.
export DEBUG=false SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false SECURE_HSTS_SECONDS=0
export LOUPE_BIND="$HOST:$PORT"

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null
  for _ in $(seq 60); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && exit 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null
  exit 0
}
trap stop INT TERM EXIT

# Two workers on two queues' worth of work, one thread each (LOUPE_WORKER_PROCESSES=2): short
# work a person waits for, and long jobs (training, promotion, imports), which never block it.
"$PY" -m celery -A project worker -Q default -n short@%h --pool=solo --loglevel=INFO & pids+=($!)
"$PY" -m celery -A project worker -Q gpu,bulk -n long@%h --pool=solo --loglevel=INFO & pids+=($!)
"$PY" -m celery -A project beat --loglevel=INFO & pids+=($!)
"$PY" -m gunicorn -c project/gunicorn.conf.py & pids+=($!)
echo "Loupe on http://$HOST:$PORT  (workers, beat and gunicorn: pids ${pids[*]}; Ctrl-C stops all)"
wait "${pids[3]}"
