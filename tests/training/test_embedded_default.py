"""A training run end to end on the embedded default: SQLite (WAL) + the file-system broker +
a separate worker process, as `make run` sets it up (encoders faked for speed)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.worker, pytest.mark.slow]

SETUP = """
from embeddings.models import Caption, Collection
from tests.factories import make_image
from training import services
c = Collection.objects.create(name="tiny", is_public=True)
for i in range(12):
    img = make_image(c, seed=i, caption=f"a photo number {i % 4}", split="train" if i < 8 else "dev")
    Caption.objects.create(image=img, text=f"picture {i % 3} of things", source="imported")
run = services.training_run_start(kind="embedding", collections=[c], user=None, config_overrides={
    "loop": {"epochs": 2, "batch_size": 4, "warmup_steps": 0}, "model": {"family": "joint", "dim": 16, "hidden": 32}})
print("RUN", run.pk)
"""


def test_training_run_succeeds_on_sqlite_and_the_filesystem_broker(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "tests.training.embedded_settings", "LOUPE_VAR_DIR": str(tmp_path / "var"),
                "DEBUG": "true", "PYTHONUNBUFFERED": "1"})
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
    out = subprocess.run([*manage, "shell", "-c", SETUP], cwd=REPO, env=env, check=True, capture_output=True,
                         text=True, timeout=300).stdout
    run_id = int(out.split("RUN")[1].split()[0])
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "default,gpu,bulk",
                               "--pool=solo", "--loglevel=INFO"], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    db = sqlite3.connect(tmp_path / "var" / "loupe.sqlite3", timeout=30)
    try:
        deadline, status = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            status = db.execute("select status from training_trainingrun where id=?", (run_id,)).fetchone()[0]
            if status in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        row = db.execute("select status, error, model_version_id, attempts from training_trainingrun where id=?",
                         (run_id,)).fetchone()
        assert row[0] == "succeeded", (row, (tmp_path / "worker.log").read_text()[-3000:])
        assert row[2] is not None and row[3] == 1
        kind, status = db.execute("select kind, status from embeddings_modelversion where id=?", (row[2],)).fetchone()
        assert (kind, status) == ("embedding", "candidate")
    finally:
        db.close()
        worker.terminate()
        worker.wait(timeout=30)
