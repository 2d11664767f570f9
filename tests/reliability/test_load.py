"""Short load runs against a real stack (issue 7, case 24; the 60-second runs are bench/load_test.py).

gunicorn + a Celery worker + PostgreSQL and Redis (or the embedded SQLite + file-system broker),
concurrent clients mixing text searches and uploads, and an index rebuild swapping the served
FAISS file half-way. A fake 16-d model stands in for ConSE (model loading is not the point here;
the bench uses the real one). Every upload answered 201 must end up ready with a vector.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import worker_env
from tests.reliability.loadgen import (Stack, manage, markdown, problems_in_logs, run_load, setup_users, verify_uploads,
                                       warm_up)

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _check(result, verify, stack) -> None:
    assert result.count() > 0 and not result.errors, result.errors[:5]
    assert result.count(lo=500, hi=599) == 0, result.statuses
    assert result.count("upload", 201, 201) > 0 and result.count("search", 200, 200) > 0
    assert result.swap["returncode"] == 0 and "image index of version" in result.swap["output"], result.swap
    assert verify["found"] == verify["ready"] == verify["with_vector"] == len(result.uploaded), verify
    assert not problems_in_logs(stack), problems_in_logs(stack)[:10]


@pytest.mark.django_db(transaction=True)
def test_short_load_on_postgres_and_redis_gives_no_5xx_and_loses_no_upload(live_broker, settings, tmp_path, capsys):
    env = worker_env(settings, DJANGO_SETTINGS_MODULE="tests.reliability.fault_settings", LOUPE_TEST_FAKE_ENCODER="1")
    data = setup_users(env, 6, fake=True)
    with Stack(env, tmp_path / "logs") as stack:
        warm_up(stack, env, data["users"], data["version"])
        result = run_load(stack, data["users"], seconds=8, swap_env=env)
        verify = verify_uploads(env, result.uploaded, data["version"], timeout=120)
    with capsys.disabled():
        report = markdown("PostgreSQL + Redis (short)", "pytest tests/reliability/test_load.py", result, verify, {})
        print("\n" + report)
    _check(result, verify, stack)


def test_short_load_on_the_embedded_sqlite_default_has_no_database_is_locked(tmp_path, capsys):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "DATABASE_URL", "CELERY_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "tests.reliability.embedded_settings", "LOUPE_TEST_FAKE_ENCODER": "1",
                "LOUPE_VAR_DIR": str(tmp_path / "var"), "DEBUG": "false", "PYTHONUNBUFFERED": "1"})
    migrated = manage(env, "migrate", "--no-input", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    data = setup_users(env, 3, fake=True)
    with Stack(env, tmp_path / "logs") as stack:
        warm_up(stack, env, data["users"], data["version"])
        result = run_load(stack, data["users"], seconds=8, swap_env=env)
        verify = verify_uploads(env, result.uploaded, data["version"], timeout=120)
    with capsys.disabled():
        print("\n" + markdown("SQLite + file-system broker (short)", "pytest tests/reliability/test_load.py", result,
                              verify, {}))
    _check(result, verify, stack)
