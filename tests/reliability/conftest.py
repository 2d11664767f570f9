"""Fixtures for the reliability tests: fault-injecting workers, broker switching, model setup."""
from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, WorkerProcess, worker_env

FAULT_SETTINGS = "tests.reliability.fault_settings"
# ConSE class vectors (1000 ImageNet names through MiniLM) take a minute to build on a loaded
# 2-core machine; they are a pure function of the text encoder, so tests reuse one copy.
CLASS_VECTOR_DIRS = (REPO / "var" / "cache" / "conse", REPO / "var" / "models" / "conse")


@contextmanager
def broker_url(url: str) -> Iterator[None]:
    """Point this process's Celery publisher at `url`, then back.

    Celery caches the connection pool and the producer pool on first use, so changing
    `broker_url` alone is not enough once anything was published. The pools stay open in
    kombu's per-URL registry (closing them would leave a closed pool there for the next user).
    """
    from project.celery import app

    def reset(to: str) -> None:
        app.conf.broker_url = to
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    reset(url)
    try:
        yield
    finally:
        reset(before)


@pytest.fixture
def live_broker(settings, purge_broker):
    """Publish to the test Redis database (the one the test workers consume)."""
    with broker_url(settings.CELERY_BROKER_URL):
        yield purge_broker


@pytest.fixture
def fault_dir(tmp_path) -> Path:
    path = tmp_path / "faults"
    path.mkdir()
    return path


def step_runs(fault_dir: Path) -> list[tuple[int, int, list[int]]]:
    """(pid, attempts, image ids) for each time the fault step ran in any worker process."""
    log = fault_dir / "steps.log"
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        pid, attempts, ids = line.split()
        rows.append((int(pid), int(attempts), [int(i) for i in ids.split(",")]))
    return rows


@pytest.fixture
def fault_worker(settings, fault_dir, live_broker, transactional_db):
    """Factory: start real worker processes with fault_settings; all are stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(pool: str = "solo", queues: str = "default,gpu,bulk", **env: str) -> WorkerProcess:
        extra_env = {"DJANGO_SETTINGS_MODULE": FAULT_SETTINGS, "LOUPE_TEST_FAULT_DIR": str(fault_dir),
                     **{k: str(v) for k, v in env.items()}}
        extra = ["--pool=prefork", "--concurrency=1"] if pool == "prefork" else []
        worker = WorkerProcess(worker_env(settings, **extra_env), queues=queues, extra=extra)
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        stop_now(worker)


def stop_now(worker: WorkerProcess) -> None:
    """Cold shutdown (SIGQUIT: no waiting for the running task), SIGKILL if that hangs. A solo
    worker blocked inside a task (a fault test's sleep) does not act on SIGQUIT until the task
    returns, so the wait is short: an idle worker exits within a second or two."""
    if worker.proc is None or worker.proc.poll() is not None:
        return
    worker.proc.send_signal(signal.SIGQUIT)
    try:
        worker.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait()


@pytest.fixture
def conse_class_vectors(settings) -> Iterator[None]:
    """Seed MODEL_DIR/conse with cached ConSE class vectors, and keep any new ones afterwards."""
    target = Path(settings.MODEL_DIR) / "conse"
    target.mkdir(parents=True, exist_ok=True)
    for folder in CLASS_VECTOR_DIRS:
        for path in folder.glob("class-vectors-*.npy"):
            if not (target / path.name).exists():
                shutil.copy2(path, target / path.name)
    yield
    cache = CLASS_VECTOR_DIRS[0]
    cache.mkdir(parents=True, exist_ok=True)
    for path in target.glob("class-vectors-*.npy"):
        if not (cache / path.name).exists():
            shutil.copy2(path, cache / f"{path.name}.part")
            (cache / f"{path.name}.part").replace(cache / path.name)


@pytest.fixture
def conse_v0(db, conse_class_vectors):
    """The fresh-install ConSE v0 as the active embedding model (recreated if a flush removed it)."""
    from embeddings.models import ModelVersion

    version = ModelVersion.objects.filter(kind="embedding", family="conse").first()
    if version is None:
        import importlib

        config = importlib.import_module("embeddings.migrations.0002_conse_v0").CONSE_CONFIG
        version = ModelVersion.objects.create(
            kind="embedding", name="conse-v0", family="conse", status="candidate", config=config, dim=384)
    ModelVersion.objects.filter(kind="embedding", status="active").exclude(pk=version.pk).update(status="retired")
    ModelVersion.objects.filter(pk=version.pk).update(status="active")
    version.refresh_from_db()
    return version


@pytest.fixture
def no_active_models(db):
    """No active model of any kind: processing steps store nothing and load no weights."""
    from embeddings.models import ModelVersion

    ModelVersion.objects.filter(status="active").update(status="retired")


@pytest.fixture
def worker_fake_version(db):
    """An active embedding version served by faultapp's FakeEmbedder (LOUPE_TEST_FAKE_ENCODER=1)."""
    from embeddings.models import ModelVersion

    ModelVersion.objects.filter(status="active").update(status="retired")
    return ModelVersion.objects.create(kind="embedding", name="fake", family="fake", status="active", dim=16)
