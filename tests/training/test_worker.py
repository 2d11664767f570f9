"""Training runs executed by a REAL Celery worker process (Redis broker, PostgreSQL test DB).

The worker uses tests/training/worker_settings.py: fake encoders (no 1-minute model loads),
a 0.3 s heartbeat and a 3 s heartbeat timeout, so the reaper can be exercised in seconds.
"""
from __future__ import annotations

import signal
import time

import pytest

from embeddings.models import ModelVersion
from project import queueing
from tests.conftest import wait_for
from tests.training.conftest import TINY_EMBEDDING
from training import services
from training.models import TrainingRun
from training.services import fitting

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def epochs(n: int) -> dict:
    return {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "epochs": n}}


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
    queueing.publish("training.tasks.run_training", run.pk)  # the same task delivered twice
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
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=epochs(25),
                                      user=None)
    watch(run.pk, lambda r: r.status == "running" and r.epoch >= 2)
    first.kill(signal.SIGKILL)
    killed_at = TrainingRun.objects.get(pk=run.pk)
    assert killed_at.status == "running" and killed_at.epoch < 25
    assert services.training_runs_reap()["resubmitted"] == 0  # heartbeat not yet stale
    time.sleep(3.5)  # > LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S
    assert services.training_runs_reap()["resubmitted"] == 1
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"
    start_worker()
    watch(run.pk, lambda r: r.status == "succeeded", timeout=180)
    run.refresh_from_db()
    assert run.attempts == 2
    assert "heartbeat lost" in run.log_tail and "resumed after epoch" in run.log_tail
    assert [h["epoch"] for h in run.history] == list(range(1, 26))
    assert run.model_version.status == "candidate"


def test_promotion_fans_out_chunk_tasks_and_flips_while_searches_answer(tiny_collection, start_worker, conse_v0,
                                                                        monkeypatch, settings):
    from embeddings.models import Image, ImageEmbedding
    from search.services.queries import QueryTerm
    from search.services.search import search_images
    from tests.factories import UserFactory
    from tests.training.fakes import install_fake_runtime
    from training.models import ModelSwitch
    from training.services import promotion

    install_fake_runtime(monkeypatch.setattr)
    worker = start_worker(app="tests.training.worker_app")
    run = services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=epochs(2),
                                      user=None)
    watch(run.pk, lambda r: r.status == "succeeded")
    candidate = TrainingRun.objects.get(pk=run.pk).model_version
    admin = UserFactory(is_staff=True)
    switch = promotion.model_version_promote(version=candidate, user=admin, force=True)
    versions_seen = []
    deadline = time.monotonic() + 120
    while ModelSwitch.objects.get(pk=switch.pk).status not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, worker.output()[-3000:]
        try:
            page = search_images(user=admin, terms=[QueryTerm(text="a dog")], k=3)
            versions_seen.append(page.model_version_id)
        except Exception as exc:  # an index being rebuilt answers 503; never an error page
            assert getattr(exc, "status_code", None) == 503, exc
        time.sleep(0.05)
    switch.refresh_from_db()
    assert switch.status == "succeeded", switch.error
    assert switch.chunks_total == 3 and switch.chunks_done == 3 and switch.done == switch.total == 12
    assert ImageEmbedding.objects.filter(model_version=candidate).count() == Image.objects.count() == 12
    assert ModelVersion.objects.get(kind="embedding", status="active") == candidate
    assert versions_seen == sorted(versions_seen, key=lambda v: v == candidate.pk)  # old ... then new, never back
    assert search_images(user=admin, terms=[QueryTerm(text="a dog")], k=3).model_version_id == candidate.pk
