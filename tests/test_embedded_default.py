"""The embedded default: SQLite (WAL) + the file-system broker + a separate worker process."""
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests import images as mk

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.worker, pytest.mark.slow]


def run(env, *args, timeout=120):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=True)


def test_ingest_end_to_end_on_sqlite_and_filesystem_broker(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "project.settings", "LOUPE_VAR_DIR": str(tmp_path / "var"),
                "DEBUG": "true", "PYTHONUNBUFFERED": "1"})
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(mk.unique_jpeg(i))
    (folder / "broken.jpg").write_bytes(mk.truncated_jpeg())
    run(env, "migrate", "-v0")
    with closing(sqlite3.connect(tmp_path / "var" / "loupe.sqlite3")) as probe:
        assert probe.execute("pragma journal_mode").fetchone()[0] == "wal"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "default,gpu,bulk",
                               "--pool=solo", "--loglevel=INFO"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        out = run(env, "import_dataset", str(folder), "--format", "folder", "--collection", "local", "--no-progress")
        assert "3 imported" in out.stdout and "1 rejected" in out.stdout and "broken.jpg" in out.stdout
        deadline = time.monotonic() + 300  # the worker loads the real ConSE model first
        statuses = ""
        with closing(sqlite3.connect(tmp_path / "var" / "loupe.sqlite3", timeout=30)) as db:  # WAL: beside the worker
            while time.monotonic() < deadline:
                statuses = ",".join(sorted(r[0] for r in db.execute("select status from embeddings_image")))
                if statuses == "ready,ready,ready":
                    break
                time.sleep(0.3)
        assert statuses == "ready,ready,ready", (tmp_path / "worker.log").read_text()
        again = run(env, "import_dataset", str(folder), "--format", "folder", "--collection", "local", "--no-progress")
        assert "0 imported, 3 already present" in again.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=30)
