"""Shared fixtures: real PostgreSQL (pytest-django), real Redis, real Celery worker processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.factories import CollectionFactory, UserFactory

pytest_plugins = ["tests.browser_fixtures"]

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"
# Servers and workers that tests start load no models at start-up (each would spend seconds of the
# shared CPU on it); tests/project/test_warm_start.py turns it on for the processes it checks.
os.environ.setdefault("LOUPE_WARM_START", "false")
# ... and serve queries with the fp32 text tower (the int8 ONNX export costs each fresh process
# seconds to build); tests/embeddings/ml/test_query_encoders.py and
# tests/search/test_query_encoder_setting.py exercise the other encoders.
os.environ.setdefault("LOUPE_QUERY_ENCODER", "torch")


def server_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip when a server is missing on a developer machine; fail under CI=true."""
    if server_up(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (required under CI=true)")
    pytest.skip(message)


def require_flickr8k() -> Path:
    if (FLICKR8K / "Flickr8k.token.txt").is_file():
        return FLICKR8K
    if IN_CI:
        pytest.fail(f"Flickr8k not found at {FLICKR8K} (required under CI=true)")
    pytest.skip(f"Flickr8k not found at {FLICKR8K}")


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI:
        missing = [n for n, port in (("PostgreSQL", 5432), ("Redis", 6379)) if not server_up("127.0.0.1", port)]
        if missing:
            raise pytest.UsageError(f"Required servers missing under CI=true: {', '.join(missing)}")


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MODEL_DIR = tmp_path / "models"
    settings.INDEX_DIR = tmp_path / "indexes"
    settings.FEATURE_DIR = tmp_path / "features"
    yield


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def published(monkeypatch):
    """Tasks the services publish (the Celery boundary), as (short name, args), instead of a broker."""
    from project import queueing

    calls: list[tuple[str, tuple]] = []

    def publish(task_name: str, *args, queue=None, countdown=None) -> bool:
        calls.append((task_name.rsplit(".", 1)[-1], tuple(args)))
        return True

    monkeypatch.setattr(queueing, "publish", publish)
    return calls


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def signed_in(user):
    """A Django test client with `user` logged in (pages, not the API)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def collection(user):
    return CollectionFactory(owner=user, name="mine")


@pytest.fixture
def conse_v0(db):
    """The ConSE v0 row (transactional tests flush the one the migration made)."""
    from embeddings.services import conse_version_ensure

    return conse_version_ensure()


@pytest.fixture
def redis_server():
    require_server("Redis", "127.0.0.1", 6379)


class WorkerProcess:
    """A real `celery worker` subprocess on the test database and broker."""

    def __init__(self, env: dict[str, str], queues: str = "default,gpu,bulk", extra: list[str] | None = None) -> None:
        self.env = env
        self.args = [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", queues, "--pool=solo",
                     "--concurrency=1", "--loglevel=INFO", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", *(extra or [])]
        self.proc: subprocess.Popen | None = None
        self.log = Path(env.get("LOUPE_VAR_DIR", "/tmp")) / f"worker-{time.time_ns()}.log"

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()}")
            time.sleep(0.2)
        raise RuntimeError(f"worker did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = 9) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def worker_env(settings, **extra: str) -> dict[str, str]:
    """Environment for a worker that sees the same (test) database and media as this process."""
    from django.db import connection

    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.test_settings",
        "TEST_DATABASE_URL": url,
        "TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "TEST_MODEL_DIR": str(settings.MODEL_DIR),
        "TEST_INDEX_DIR": str(settings.INDEX_DIR),
        "TEST_FEATURE_DIR": str(settings.FEATURE_DIR),
        "TEST_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class BrokerKeys:
    """This test run's keys on the shared Redis (other runs on the machine use other prefixes)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def llen(self, queue: str) -> int:
        return self.client.llen(self.prefix + queue)

    def flush(self) -> None:
        for key in self.client.scan_iter(match=self.prefix + "*"):
            self.client.delete(key)


@pytest.fixture
def purge_broker(redis_server, settings):
    keys = BrokerKeys(settings.CELERY_BROKER_URL, settings.BROKER_KEY_PREFIX)
    keys.flush()
    yield keys
    keys.flush()


@pytest.fixture
def celery_worker_proc(transactional_db, purge_broker, settings):
    """A real worker process for one test (transactional: the worker sees committed rows)."""
    from project.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL
    worker = WorkerProcess(worker_env(settings)).start()
    yield worker
    worker.stop()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
