"""Mixed load (issue 7, case 24): C concurrent clients for S seconds mixing text searches and
uploads (small generated JPEGs) against gunicorn (2 workers) + PostgreSQL + Redis + one Celery
worker, with the REAL ConSE v0 model, while `manage.py build_index --modality image` (the
rebuild service, a separate process) rebuilds and swaps the served index during the run.

Counts 5xx (goal 0), lost uploads (every 201 must end as a ready image with a vector of the
active version: the worker is drained, then the database checked) and p95. Uses a throwaway
database (`--db`, dropped at the end), a var dir under var/bench/load and Redis db `--redis-db`.
Client, stack and checks: tests/reliability/loadgen.py (shared with tests/reliability/test_load.py).

Usage: .venv/bin/python bench/load_mixed.py --clients 20 --seconds 60
"""
from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.loadgen import (Stack, manage, markdown, problems_in_logs, run_load,  # noqa: E402
                                       setup_users, verify_uploads, warm_up)


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--upload-share", type=float, default=0.2)
    ap.add_argument("--db", default="loupe_bench_load")
    ap.add_argument("--redis-db", type=int, default=12)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "load.md"))
    args = ap.parse_args()
    cmd = ".venv/bin/python bench/load_mixed.py " + " ".join(sys.argv[1:])
    var = REPO / "var" / "bench" / "load"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TEST_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "false", "LOUPE_VAR_DIR": str(var),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.db}", "SECRET_KEY": secrets.token_urlsafe(48),
        "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{args.redis_db}", "ALLOWED_HOSTS": "127.0.0.1",
        "THROTTLE_SEARCH": "1000000/min", "THROTTLE_ANON": "1000000/min", "THROTTLE_USER": "1000000/min",
        "THROTTLE_UPLOADS": "1000000/min", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
    })
    loads = [os.getloadavg()]
    psql(f"DROP DATABASE IF EXISTS {args.db}")
    psql(f"CREATE DATABASE {args.db}")
    try:
        migrated = manage(env, "migrate", "--no-input", "-v0")
        if migrated.returncode != 0:
            raise RuntimeError(migrated.stderr[-3000:])
        data = setup_users(env, args.clients, fake=False)  # real ConSE v0 stays active
        with Stack(env, var / "logs") as stack:
            warm = warm_up(stack, env, data["users"], data["version"])
            loads.append(os.getloadavg())
            result = run_load(stack, data["users"], seconds=args.seconds, upload_share=args.upload_share,
                              swap_env=env)
            loads.append(os.getloadavg())
            verify = verify_uploads(env, result.uploaded, data["version"], timeout=900)
            problems = problems_in_logs(stack)
        loads.append(os.getloadavg())
        lost = len(result.uploaded) - verify["with_vector"]
        extra = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other agents, no GPU; "
                       "load average (1/5/15 min) before setup / before run / after run / after drain: "
                       + " / ".join(", ".join(f"{x:.1f}" for x in la) for la in loads),
            "stack": "gunicorn 2 workers x 4 threads, DEBUG=false, 127.0.0.1; PostgreSQL (throwaway db); Redis "
                     f"db {args.redis_db}; one Celery worker (solo pool); real ConSE v0 (EfficientNet-Lite0 + "
                     "MiniLM); THROTTLE_* raised to 1000000/min",
            "mix": f"{args.upload_share:.0%} uploads (64x48 generated JPEGs, authenticated, own collection), "
                   "the rest text searches (2 random words, k=10)",
            "warm-up (one upload + one search per client, index built)": f"{warm:.0f} s",
            "**5xx**": f"{result.count(lo=500, hi=599)} (goal 0)",
            "**lost uploads** (201 without a ready image + vector afterwards)": f"{lost} (goal 0)",
            "log problems (tracebacks, 5xx, worker timeouts)": str(len(problems)),
        }
        text = markdown(f"{args.clients} clients, {args.seconds:.0f} s, searches + uploads + index swap", cmd,
                        result, verify, extra)
        if problems:
            text += "\nLog problems (first 10):\n\n```\n" + "\n".join(problems[:10]) + "\n```\n"
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with Path(args.out).open("a") as f:
            f.write(text + "\n")
        print(text)
    finally:
        psql(f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)")
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
