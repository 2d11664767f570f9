"""Training runs executed by a REAL Celery worker process (Redis broker, PostgreSQL test DB).

The worker uses tests/training/worker_settings.py: fake encoders (no 1-minute model loads),
a 0.3 s heartbeat and a 3 s heartbeat timeout, so the reaper can be exercised in seconds.
"""
from __future__ import annotations

import signal
import time

import pytest

from embeddings.models import ModelVersion
from tests.conftest import WorkerProcess, wait_for, worker_env
from tests.training.conftest import TINY_EMBEDDING
from training import services
from training.models import TrainingRun
from training.services import fitting

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def epochs(n: int) -> dict:
    return {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "epochs": n}}


@pytest.fixture
def start_worker(purge_broker, settings, fake_encoders):
    from project.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        env = worker_env(settings, DJANGO_SETTINGS_MODULE="tests.training.worker_settings")
        worker = WorkerProcess(env, queues="default,gpu").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def watch(run_id: int, until, timeout: float = 120.0) -> list[str]:
    """Statuses seen (deduplicated, in order) until `until(run)` holds."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if not seen or seen[-1] != run.status:
            seen.append(run.status)
        if until(run):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} stuck; statuses {seen}; log:\n{TrainingRun.objects.get(pk=run_id).log_tail}")


def test_run_goes_queued_running_succeeded_and_a_duplicate_delivery_is_a_noop(tiny_collection, start_worker):
    worker = start_worker()
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=epochs(4),
                                      user=None)
    services.runs._publish(run.pk)  # the same task delivered twice
    seen = watch(run.pk, lambda r: r.status not in TrainingRun.ACTIVE_STATUSES)
    assert seen[0] == "queued" and seen[-1] == "succeeded" and "running" in seen
    run.refresh_from_db()
    assert run.attempts == 1 and run.model_version.status == "candidate"
    assert run.device.startswith("cpu") and run.worker_host
    wait_for(lambda: "nothing to do" in worker.output(), timeout=30)
    assert ModelVersion.objects.filter(kind="embedding", status="candidate").count() == 1


def test_failed_run_keeps_error_and_log_tail_and_frees_the_kind(tiny_collection, start_worker):
    start_worker()
    bad = {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "early_stop_metric": "no_such_metric"}}
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=bad, user=None)
    watch(run.pk, lambda r: r.status == "failed")
    run.refresh_from_db()
    assert "no_such_metric" in run.error and run.history == [] and "failed: KeyError" in run.log_tail
    assert not ModelVersion.objects.filter(status="candidate").exists()
    again = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=epochs(2),
                                        user=None)
    watch(again.pk, lambda r: r.status == "succeeded")


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(tiny_collection, start_worker):
    start_worker()
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=epochs(300),
                                      user=None)
    watch(run.pk, lambda r: r.status == "running" and r.epoch >= 1)
    services.training_run_cancel(run=run)
    watch(run.pk, lambda r: r.status == "cancelled", timeout=60)
    run.refresh_from_db()
    assert run.epoch < 300 and run.model_version is None and "cancelled at epoch" in run.log_tail
    assert (fitting.run_dir(run.pk) / "state" / "last.json").exists()
    assert ModelVersion.objects.get(kind="embedding", status="active").family == "conse"


def test_sigkilled_worker_run_is_reaped_resubmitted_and_finishes_from_its_checkpoint(tiny_collection, start_worker):
    first = start_worker()
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=epochs(14),
                                      user=None)
    watch(run.pk, lambda r: r.status == "running" and r.epoch >= 2)
    first.kill(signal.SIGKILL)
    killed_at = TrainingRun.objects.get(pk=run.pk)
    assert killed_at.status == "running" and killed_at.epoch < 14
    assert services.training_runs_reap()["resubmitted"] == 0  # heartbeat not yet stale
    time.sleep(3.5)  # > LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S
    assert services.training_runs_reap()["resubmitted"] == 1
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"
    start_worker()
    watch(run.pk, lambda r: r.status == "succeeded", timeout=180)
    run.refresh_from_db()
    assert run.attempts == 2
    assert "heartbeat lost" in run.log_tail and "resumed after epoch" in run.log_tail
    assert [h["epoch"] for h in run.history] == list(range(1, 15))
    assert run.model_version.status == "candidate"
