"""Faults in real Celery workers (Redis broker): SIGKILL mid-task, poison images, commit races.

Issue 7, cases 15, 16 and 18. Every test runs real `celery worker` subprocesses on the test
database (tests/reliability/fault_settings.py adds a step after encode/caption that records each
run and can pause or crash). The task is `embeddings.tasks.process_images` with
acks_late + reject_on_worker_lost; poison protection is the attempts counter in
embeddings/services/processing.py.
"""
from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from embeddings.models import Image, ImageEmbedding
from embeddings.services import enqueue_image_processing
from embeddings.tasks import sweep_pending
from tests.conftest import wait_for
from tests.factories import CollectionFactory, UserFactory, make_image
from tests.reliability.conftest import step_runs

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _unacked(keys) -> int:
    """Messages delivered to a worker and not yet acknowledged (kombu's Redis 'unacked' hash)."""
    return keys.client.hlen(keys.prefix + "unacked")


def _images(n: int, start: int = 0, **fields) -> list[Image]:
    collection = CollectionFactory(owner=UserFactory())
    return [make_image(collection, seed=start + i, **fields) for i in range(n)]


def _statuses(ids: list[int]) -> set[str]:
    return set(Image.objects.filter(pk__in=ids).values_list("status", flat=True))


def _vectors_per_image_version(ids: list[int]) -> list[int]:
    rows = (ImageEmbedding.objects.filter(image_id__in=ids).values("image_id", "model_version_id")
            .annotate(n=Count("id")).values_list("n", flat=True))
    return sorted(rows)


@pytest.mark.slow
def test_sigkilled_solo_worker_mid_task_is_redelivered_and_leaves_one_vector_per_image_and_version(
        fault_worker, fault_dir, conse_v0):
    """Case 15 with the real ConSE model and a --pool=solo worker (how GPU workers run).

    The whole worker is SIGKILLed after the encode step stored the vectors but before the task
    finished, so the message was never acknowledged (acks_late). A new worker gets it back from
    Redis once the (test-shortened) visibility timeout passes, encodes again, and the upsert
    leaves exactly one vector per (image, model version).
    """
    ids = [img.pk for img in _images(3)]
    first = fault_worker(LOUPE_TEST_STEP_DELAY=600)
    assert enqueue_image_processing(ids)
    runs = wait_for(lambda: step_runs(fault_dir), timeout=240, interval=0.5)
    assert runs[0][0] == first.proc.pid and sorted(runs[0][2]) == sorted(ids)
    assert ImageEmbedding.objects.filter(image_id__in=ids, model_version=conse_v0).count() == 3
    os.kill(runs[0][0], signal.SIGKILL)
    first.proc.wait(timeout=30)
    assert _statuses(ids) == {Image.Status.PROCESSING}  # died mid-task: nothing marked done

    fault_worker(LOUPE_TEST_VISIBILITY_TIMEOUT=2)
    wait_for(lambda: _statuses(ids) == {Image.Status.READY}, timeout=240, interval=0.5)
    assert _vectors_per_image_version(ids) == [1, 1, 1]
    assert set(Image.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {2}
    runs = step_runs(fault_dir)
    assert runs[0][1] == 1 and sorted(runs[0][2]) == sorted(ids)
    # The redelivered batch had an unfinished try, so each image got a task of its own.
    assert sorted((attempts, ids_) for _, attempts, ids_ in runs[1:]) == [(2, [i]) for i in sorted(ids)]


def test_sigkilled_pool_child_task_is_requeued_at_once_by_reject_on_worker_lost(fault_worker, fault_dir,
                                                                                worker_fake_version):
    """Case 15 with a prefork worker: SIGKILL the child running the task mid-way.

    The parent sees the child die (WorkerLostError) and, because the task is acks_late +
    reject_on_worker_lost, requeues the message at once (the visibility timeout is an hour here,
    so nothing else could bring it back). The new child finishes the batch; the upsert leaves
    one vector per (image, model version).
    """
    ids = [img.pk for img in _images(3, start=20)]
    worker = fault_worker(pool="prefork", LOUPE_TEST_STEP_DELAY=600, LOUPE_TEST_FAKE_ENCODER=1)
    assert enqueue_image_processing(ids)
    runs = wait_for(lambda: step_runs(fault_dir), timeout=120, interval=0.3)
    child = runs[0][0]
    assert child != worker.proc.pid
    assert ImageEmbedding.objects.filter(image_id__in=ids, model_version=worker_fake_version).count() == 3
    os.kill(child, signal.SIGKILL)

    wait_for(lambda: _statuses(ids) == {Image.Status.READY}, timeout=120, interval=0.3)
    assert _vectors_per_image_version(ids) == [1, 1, 1]
    runs = step_runs(fault_dir)
    assert runs[0][1] == 1 and sorted(runs[0][2]) == sorted(ids)
    assert sorted((attempts, ids_) for _, attempts, ids_ in runs[1:]) == [(2, [i]) for i in sorted(ids)]
    assert all(pid != child for pid, _, _ in runs[1:])
    assert "WorkerLostError" in worker.output()
    assert worker.proc.poll() is None  # the parent lives on


def test_poison_image_that_kills_the_worker_is_tried_at_most_max_attempts_then_failed(
        fault_worker, fault_dir, no_active_models, live_broker, settings):
    """Case 16: an image whose processing kills the worker process every time (like a decoder
    segfault). reject_on_worker_lost requeues it after each death, so only the attempts counted
    in the database stop the loop: after LOUPE_MAX_TASK_ATTEMPTS runs it is marked failed with a
    reason and the message is finally acknowledged; nothing is left in the broker."""
    limit = settings.LOUPE_MAX_TASK_ATTEMPTS
    (image,) = _images(1, start=40, source_name="poison.jpg")
    worker = fault_worker(pool="prefork", LOUPE_TEST_POISON="poison", LOUPE_TEST_POISON_MODE="exit",
                          LOUPE_MAX_TASK_ATTEMPTS=limit)
    assert enqueue_image_processing([image.pk])
    wait_for(lambda: _statuses([image.pk]) == {Image.Status.FAILED}, timeout=180, interval=0.3)
    image.refresh_from_db()
    assert f"{limit} attempts" in image.status_reason
    runs = step_runs(fault_dir)
    assert len(runs) == limit and len({pid for pid, _, _ in runs}) == limit  # a new child each time
    assert image.attempts == limit  # the claim that gives up is not counted as an attempt
    time.sleep(3)  # no redelivery loop: nothing more runs, and the broker holds nothing
    assert len(step_runs(fault_dir)) == limit
    assert live_broker.llen("default") == 0 and _unacked(live_broker) == 0
    assert worker.proc.poll() is None


def test_poison_image_that_kills_the_worker_inside_a_batch_costs_its_batch_mates_one_retry_only(
        fault_worker, fault_dir, no_active_models, live_broker, settings):
    """Case 16 inside a batch: the first crash takes the whole batch down (its images stay
    `processing`); the redelivered batch is split into one task per image, so the good images
    finish on their second try and only the poison image goes on crashing workers until its
    attempts run out."""
    limit = settings.LOUPE_MAX_TASK_ATTEMPTS
    good = _images(2, start=70)
    bad = make_image(good[0].collection, seed=80, source_name="poison.jpg")
    ids = [good[0].pk, bad.pk, good[1].pk]
    worker = fault_worker(pool="prefork", LOUPE_TEST_POISON="poison", LOUPE_TEST_POISON_MODE="exit",
                          LOUPE_MAX_TASK_ATTEMPTS=limit)
    assert enqueue_image_processing(ids)
    wait_for(lambda: _statuses(ids) == {Image.Status.READY, Image.Status.FAILED}
             and Image.objects.get(pk=bad.pk).status == Image.Status.FAILED, timeout=240, interval=0.3)
    assert _statuses([g.pk for g in good]) == {Image.Status.READY}
    assert set(Image.objects.filter(pk__in=[g.pk for g in good]).values_list("attempts", flat=True)) == {2}
    bad.refresh_from_db()
    assert bad.attempts == limit and f"{limit} attempts" in bad.status_reason
    runs = step_runs(fault_dir)
    assert sorted(runs[0][2]) == sorted(ids)  # the one batch run
    assert all(len(r[2]) == 1 for r in runs[1:])  # then single-image tasks only
    assert len([r for r in runs if bad.pk in r[2]]) == limit
    time.sleep(3)
    assert live_broker.llen("default") == 0 and _unacked(live_broker) == 0
    assert worker.proc.poll() is None


def test_poison_image_that_raises_fails_after_max_attempts_while_its_batch_mates_finish(
        fault_worker, fault_dir, no_active_models, settings):
    """Cases 16 and 6: a batch with one image whose processing always raises. The batch is
    retried image by image, so the good images become ready at once; the bad one goes back to
    pending with the error, the periodic sweeper (`embeddings.tasks.sweep_pending`, sent through
    the broker as beat would) retries it, and after LOUPE_MAX_TASK_ATTEMPTS it is failed with
    the reason. Further sweeps leave it alone."""
    limit = settings.LOUPE_MAX_TASK_ATTEMPTS
    good = _images(2, start=50)
    bad = make_image(good[0].collection, seed=60, source_name="poison.jpg")
    ids = [good[0].pk, bad.pk, good[1].pk]
    fault_worker(LOUPE_TEST_POISON="poison", LOUPE_TEST_POISON_MODE="raise", LOUPE_MAX_TASK_ATTEMPTS=limit)
    assert enqueue_image_processing(ids)
    wait_for(lambda: _statuses([g.pk for g in good]) == {Image.Status.READY}, timeout=120, interval=0.3)
    for attempt in range(1, limit + 2):
        wait_for(lambda: Image.objects.get(pk=bad.pk).status in (Image.Status.PENDING, Image.Status.FAILED),
                 timeout=60, interval=0.3)
        bad.refresh_from_db()
        if bad.status == Image.Status.FAILED:
            break
        assert bad.attempts == attempt and "poison" in bad.status_reason
        # The sweeper leaves images younger than 30 s alone (they may still be in flight).
        Image.objects.filter(pk=bad.pk).update(created_at=timezone.now() - timedelta(minutes=5))
        runs_before = len(step_runs(fault_dir))
        sweep_pending.delay()
        wait_for(lambda runs_before=runs_before: len(step_runs(fault_dir)) > runs_before or
                 Image.objects.get(pk=bad.pk).status == Image.Status.FAILED, timeout=60, interval=0.3)
    bad.refresh_from_db()
    assert bad.status == Image.Status.FAILED and bad.attempts == limit
    assert f"failed after {limit} attempts" in bad.status_reason and "poison" in bad.status_reason
    poison_runs = [r for r in step_runs(fault_dir) if r[2] == [bad.pk]]
    assert len(poison_runs) == limit
    assert set(Image.objects.filter(pk__in=[g.pk for g in good]).values_list("attempts", flat=True)) == {1}


def test_tasks_are_published_only_after_commit_and_never_after_a_rollback(
        fault_worker, fault_dir, no_active_models, live_broker):
    """Case 18. With an idle worker waiting, an image ingested inside a transaction that is held
    open is not published (the worker cannot race ahead and look for a row that is not committed
    yet); on commit it is published and processed once. One ingested in a transaction that rolls
    back is never published at all: the worker never even receives a task for it."""
    worker = fault_worker()
    collection = CollectionFactory(owner=UserFactory())
    with transaction.atomic():
        image = make_image(collection, seed=70, enqueue=True)
        time.sleep(1.5)  # a worker faster than the commit would have picked a task up by now
        assert live_broker.llen("default") == 0 and _unacked(live_broker) == 0
        assert "received" not in worker.output().split("ready.", 1)[1]
    wait_for(lambda: _statuses([image.pk]) == {Image.Status.READY}, timeout=60, interval=0.3)
    assert Image.objects.get(pk=image.pk).attempts == 1
    assert [r[2] for r in step_runs(fault_dir)] == [[image.pk]]

    received = worker.output().count("received")
    with pytest.raises(RuntimeError), transaction.atomic():
        make_image(collection, seed=71, enqueue=True)
        raise RuntimeError("roll back")
    time.sleep(1.5)
    assert live_broker.llen("default") == 0
    assert worker.output().count("received") == received
    assert Image.objects.count() == 1
    assert "DoesNotExist" not in worker.output() and "Traceback" not in worker.output()
