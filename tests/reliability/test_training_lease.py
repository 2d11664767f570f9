"""A training run that outlives the broker's visibility timeout (issue 7, case 17).

Redis gives an unacknowledged task to another worker once the visibility timeout passes, even
though the first worker is alive and still training. The run's database lease and heartbeat
make that second delivery a no-op: never two concurrent executions of one run.

The other half of case 17 (a dead worker's run is reaped and resumes from its checkpoint) is
tests/training/test_worker.py::test_sigkilled_worker_run_is_reaped_resubmitted_and_finishes_from_its_checkpoint.
"""
from __future__ import annotations

import re

import pytest

from tests.conftest import WorkerProcess, wait_for, worker_env
from tests.reliability.conftest import stop_now
from tests.training.conftest import TINY_EMBEDDING, conse_v0, fake_encoders, tiny_collection  # noqa: F401
from training import services
from training.models import TrainingRun

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_workers(live_broker, settings, fake_encoders):  # noqa: F811 (the fixture imported above)
    env = worker_env(settings, DJANGO_SETTINGS_MODULE="tests.reliability.training_worker_settings",
                     LOUPE_TEST_VISIBILITY_TIMEOUT="2")
    workers = [WorkerProcess(env).start(), WorkerProcess(env).start()]
    yield workers
    for worker in workers:
        stop_now(worker)


def _received(worker: WorkerProcess) -> int:
    return len(re.findall(r"Task training\.tasks\.run_training\[[^\]]+\] received", worker.output()))


def test_run_longer_than_the_visibility_timeout_is_redelivered_but_never_runs_twice_at_once(
        tiny_collection, two_workers):  # noqa: F811 (the fixture imported above)
    config = {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "epochs": 300}}
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=config,
                                      user=None)
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).status == "running", timeout=120)
    running = TrainingRun.objects.get(pk=run.pk)
    token = running.lease_token
    # The 2 s visibility timeout passes; the idle worker restores the message (kombu checks
    # every 10 s) and receives the same task while the run is still going.
    wait_for(lambda: sum(_received(w) for w in two_workers) >= 2, timeout=60, interval=0.5)
    wait_for(lambda: any("leased by a live worker; nothing to do" in w.output() for w in two_workers), timeout=30)
    during = TrainingRun.objects.get(pk=run.pk)
    assert during.status == "running" and during.attempts == 1 and during.lease_token == token
    assert during.epoch > running.epoch or during.heartbeat_at > running.heartbeat_at  # the lease holder goes on
    services.training_run_cancel(run=during)  # end the long run early
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).status == "cancelled", timeout=60)
    run.refresh_from_db()
    epochs = [h["epoch"] for h in run.history]
    assert run.attempts == 1 and epochs == list(range(1, len(epochs) + 1))  # one execution, no epoch twice
    assert sum("lease lost" in w.output() for w in two_workers) == 0
