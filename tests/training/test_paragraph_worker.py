"""The paragraph kind through a REAL Celery worker process (the admin's path: start -> on-commit
task on the gpu queue -> training_run_execute), with the worker's fake encoders."""
from __future__ import annotations

import pytest

from tests.training.conftest import TINY_PARAGRAPH
from tests.training.test_worker import watch
from training import services
from training.models import TrainingRun

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_queued_paragraph_run_is_trained_by_the_worker_with_progress(paragraph_collection, start_worker):
    start_worker()
    run = services.training_run_start(kind="paragraph", collections=[paragraph_collection],
                                      config_overrides=TINY_PARAGRAPH, user=None)
    seen = watch(run.pk, lambda r: r.status not in TrainingRun.ACTIVE_STATUSES)
    assert seen[0] == "queued" and seen[-1] == "succeeded", TrainingRun.objects.get(pk=run.pk).error
    run.refresh_from_db()
    assert run.step == run.total_steps == 200 and run.model_version.kind == "paragraph"
    assert run.device.startswith("cpu") and "p2i_r1" in run.model_version.metrics["dev"]


def test_cancel_stops_a_paragraph_run_between_passes(paragraph_collection, start_worker):
    start_worker()
    long = {**TINY_PARAGRAPH, "loop": {"epochs": 5000}}
    run = services.training_run_start(kind="paragraph", collections=[paragraph_collection], config_overrides=long,
                                      user=None)
    watch(run.pk, lambda r: r.status == "running" and r.step >= 1)
    services.training_run_cancel(run=run)
    watch(run.pk, lambda r: r.status == "cancelled", timeout=60)
    run.refresh_from_db()
    assert run.step < run.total_steps and run.model_version is None and "cancelled at epoch" in run.log_tail
