"""Load benchmark (issue 7, case 24): 60 s of concurrent clients against a real stack.

    .venv/bin/python bench/load_test.py                      # both set-ups -> bench/results/load.md
    .venv/bin/python bench/load_test.py --seconds 60 --clients 20 --sqlite-clients 5

Set-up 1, "production shape": gunicorn (2 processes x 4 threads) + one Celery worker
(--pool=solo) + PostgreSQL (a fresh database, dropped afterwards) + Redis, the real ConSE v0
model. Set-up 2, the embedded default: the same with SQLite (WAL) and the file-system broker.
Each client is its own user (token auth) and loops: 70 % text searches, 30 % uploads of a
unique 64x48 JPEG. An index rebuild (`manage.py build_index`, a separate process) swaps the
served FAISS file while the clients run. Afterwards every upload answered 201 must be ready
with a vector of the active model. The warm-up (seed uploads, model loads, first index build)
is excluded from the timed run. Loopback only.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.loadgen import (Stack, manage, markdown, problems_in_logs, run_load,  # noqa: E402
                                       setup_users, verify_uploads, warm_up)

RESULT = ROOT / "bench" / "results" / "load.md"
CLASS_VECTORS = [ROOT / "var" / "cache" / "conse", ROOT / "var" / "models" / "conse"]


def base_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEST_", "DJANGO_", "DATABASE_URL", "CELERY_", "LOUPE_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "false", "LOUPE_VAR_DIR": str(var_dir),
                "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING"})
    (var_dir / "models" / "conse").mkdir(parents=True, exist_ok=True)
    for folder in CLASS_VECTORS:  # ConSE class vectors are a pure function of MiniLM: reuse them
        for path in folder.glob("class-vectors-*.npy"):
            shutil.copy2(path, var_dir / "models" / "conse" / path.name)
    return env


def postgres_database(admin_url: str, name: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clear_queues(redis_url: str) -> None:
    """Leftovers of an aborted run would point at a dropped database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in ("default", "gpu", "unacked", "unacked_index", "unacked_mutex"):
        client.delete(key)


def one_setup(title: str, env: dict[str, str], clients: int, seconds: float, log_dir: Path,
              drain_timeout: float) -> tuple[str, bool]:
    started = time.perf_counter()
    migrated = manage(env, "migrate", "--no-input", "-v0")
    if migrated.returncode != 0:
        raise RuntimeError(migrated.stderr[-3000:])
    data = setup_users(env, clients, fake=False)
    with Stack(env, log_dir) as stack:
        warm = warm_up(stack, env, data["users"], data["version"])
        result = run_load(stack, data["users"], seconds=seconds, swap_env=env)
        stopped = time.perf_counter()
        verify = verify_uploads(env, result.uploaded, data["version"], timeout=drain_timeout)
        drained = time.perf_counter() - stopped
        problems = problems_in_logs(stack)
    ok = (not result.errors and result.count(lo=500, hi=599) == 0 and result.swap.get("returncode") == 0
          and verify["found"] == verify["ready"] == verify["with_vector"] == len(result.uploaded) and not problems)
    done = verify["ready"] + len(verify["failed"])
    extra = {"warm-up (seed uploads, model loads, first index build), not timed": f"{warm:.0f} s",
             "upload backlog after the clients stopped": f"{done} of {len(result.uploaded)} processed after "
             f"{drained:.0f} s (limit {drain_timeout:.0f} s)",
             "log lines with tracebacks, 5xx, 'database is locked' or worker timeouts": len(problems),
             "whole set-up wall time": f"{time.perf_counter() - started:.0f} s", "verdict": "PASS" if ok else "FAIL"}
    command = f".venv/bin/python bench/load_test.py --seconds {seconds:.0f} --clients ... ({clients} here)"
    section = markdown(title, command, result, verify, extra)
    if problems:
        section += "\nFirst problem lines:\n\n```\n" + "\n".join(problems[:10]) + "\n```\n"
    return section, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--sqlite-clients", type=int, default=5)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="admin URL; a fresh database is created beside it and dropped")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a Redis database for this run")
    parser.add_argument("--drain-timeout", type=float, default=3600,
                        help="seconds to wait after the run for every upload to be encoded")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    sections, all_ok = [], True
    with tempfile.TemporaryDirectory(prefix="loupe-load-", dir=ROOT / "var") as tmp:
        tmp_path = Path(tmp)
        if not args.skip_postgres:
            name = f"loupe_load_{uuid.uuid4().hex[:8]}"
            postgres_database(args.postgres, name, create=True)
            clear_queues(args.redis)
            env = base_env(tmp_path / "pg")
            env.update({"DATABASE_URL": args.postgres.rsplit("/", 1)[0] + f"/{name}", "CELERY_BROKER_URL": args.redis})
            try:
                section, ok = one_setup(f"PostgreSQL + Redis, {args.clients} clients", env, args.clients, args.seconds,
                                        tmp_path / "pg-logs", args.drain_timeout)
            finally:
                postgres_database(args.postgres, name, create=False)
                clear_queues(args.redis)
            sections.append(section)
            all_ok &= ok
        if not args.skip_sqlite:
            env = base_env(tmp_path / "sqlite")
            section, ok = one_setup(
                f"Embedded default (SQLite WAL + file-system broker), {args.sqlite_clients} clients",
                env, args.sqlite_clients, args.seconds, tmp_path / "sqlite-logs", args.drain_timeout)
            sections.append(section)
            all_ok &= ok

    head = ["## Load: concurrent searches and uploads on a real stack", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (load average "
            f"{os.getloadavg()[0]:.1f} at the end), no GPU; Python {platform.python_version()}. One run of each "
            "set-up (not a median): the figures show what this loaded machine did once, not a capacity.", "",
            "Stack: gunicorn 2 processes x 4 threads, one Celery worker (--pool=solo), the real ConSE v0 model; "
            "clients use keep-alive HTTP on loopback, 70 % `GET /api/v1/search/?q=<2 words>&k=10`, 30 % "
            "`POST /api/v1/images/` (unique 64x48 JPEG). The index rebuild runs in its own process while the "
            "clients run; they keep going until it is done. Latencies are per request, client side.", ""]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(head + sections))
    print(RESULT.read_text())
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
