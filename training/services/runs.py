"""Starting, cancelling and reaping training runs (the writes behind admin, API and CLI)."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from embeddings.models import Collection
from project import queueing
from project.exceptions import ApplicationError, Conflict
from training import datasets
from training.models import NO_LEASE, TrainingRun
from training.services.configs import default_config, train_config_build
from training.services.progress import heartbeat_timeout

logger = logging.getLogger(__name__)


def max_attempts() -> int:
    return int(settings.LOUPE_TRAINING_MAX_ATTEMPTS)


def requeue_after() -> float:
    """A queued run no worker has taken for this long is published again (broker lost it)."""
    return float(settings.LOUPE_TRAINING_REQUEUE_AFTER_S)


def run_enqueue(run_id: int) -> None:
    """Publish the run's task after the current transaction commits (the reaper publishes a run
    no worker took again)."""
    queueing.enqueue("training.tasks.run_training", run_id, queue="gpu")


def training_run_start(*, kind: str, collections: Sequence[Collection], config_overrides: Mapping[str, Any]
                       | Sequence[str] | None = None, user: Any = None, enqueue: bool = True,
                       config_sets: Sequence[str] = ()) -> TrainingRun:
    """Validate the config and data, create the queued run, enqueue it on the gpu queue.

    Raises ApplicationError (400) for a bad config or unusable collections and Conflict (409)
    while a run of this kind is queued or running.
    """
    config = train_config_build(kind=kind, overrides=config_overrides, sets=config_sets)
    collections = list(collections)
    if not collections:
        raise ApplicationError("Choose at least one collection.", fields={"collections": ["Required."]})
    counts = datasets.split_counts(collections)
    for split in ("train", "dev"):
        if counts[split] == 0:
            raise ApplicationError(
                f"The chosen collections have no {split} images with human or imported captions.",
                fields={"collections": [f"No captioned {split} images."]})
    if kind == "embedding" and counts["train"] < config.loop.batch_size:
        if config.loop.batch_size != default_config(kind).loop.batch_size:  # the caller chose it
            raise ApplicationError(
                f"Only {counts['train']} captioned train images: lower the batch size (now {config.loop.batch_size}).",
                fields={"config": ["batch_size exceeds the number of train images."]})
        # The default value suits Flickr8k-sized collections; a small one (the demo after
        # `make run`) trains with every image in one batch instead of being refused. The run's
        # stored config says what was used.
        logger.info("batch size %d lowered to the %d captioned train images", config.loop.batch_size, counts["train"])
        config = dataclasses.replace(config, loop=dataclasses.replace(config.loop, batch_size=counts["train"]))
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                kind=kind, config=config.to_dict(), created_by=user if getattr(user, "pk", None) else None,
                total_epochs=config.loop.epochs, heartbeat_at=timezone.now())
            run.collections.set(collections)
            if enqueue:
                run_enqueue(run.pk)
    except IntegrityError as exc:
        raise Conflict(f"A {kind} training run is already running.", code="already_running") from exc
    logger.info("training run %s (%s) queued on %s", run.pk, kind, [c.name for c in collections])
    return run


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Stop at the next step (running) or at once (queued); the last checkpoint is kept."""
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status not in TrainingRun.ACTIVE_STATUSES:
            raise Conflict(f"Run {run.pk} has already ended ({locked.status}).", code="not_running")
        if locked.status == TrainingRun.Status.QUEUED and not locked.lease_token:
            locked.status, locked.finished_at = TrainingRun.Status.CANCELLED, timezone.now()
        locked.cancel_requested = True
        locked.save(update_fields=["status", "finished_at", "cancel_requested"])
    return locked


def training_runs_reap(*, now=None) -> dict[str, int]:
    """Periodic: resubmit runs whose worker stopped heartbeating (they resume from their last
    checkpoint), give up after LOUPE_TRAINING_MAX_ATTEMPTS, and republish queued runs no
    worker has picked up for a long time. Safe to run anywhere, any number of times."""
    now = now or timezone.now()
    stats = {"resubmitted": 0, "failed": 0, "cancelled": 0, "republished": 0}
    stale = now - timedelta(seconds=heartbeat_timeout())
    for run_id in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale) \
            .values_list("pk", flat=True):
        with transaction.atomic():
            run = (TrainingRun.objects.select_for_update(skip_locked=True)
                   .filter(pk=run_id, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale).first())
            if run is None:
                continue
            stats[_reap_one(run, now)] += 1
    forgotten = now - timedelta(seconds=requeue_after())
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, lease_token=NO_LEASE,
                                          cancel_requested=False, heartbeat_at__lt=forgotten):
        TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(heartbeat_at=now)
        queueing.publish("training.tasks.run_training", run.pk, queue="gpu")
        stats["republished"] += 1
    if any(stats.values()):
        logger.info("training reaper: %s", stats)
    return stats


def _reap_one(run: TrainingRun, now) -> str:
    note = f"{now:%H:%M:%S} heartbeat lost (last {run.heartbeat_at:%H:%M:%S} from {run.worker_host})"
    run.log_tail = f"{run.log_tail}\n{note}".strip()
    run.lease_token = NO_LEASE
    if run.cancel_requested:
        run.status, run.finished_at = TrainingRun.Status.CANCELLED, now
        outcome = "cancelled"
    elif run.attempts >= max_attempts():
        run.status, run.finished_at = TrainingRun.Status.FAILED, now
        run.error = f"Gave up after {run.attempts} attempts: the worker stopped heartbeating each time."
        outcome = "failed"
    else:
        run.status, run.heartbeat_at = TrainingRun.Status.QUEUED, now
        run.log_tail += f"\n{now:%H:%M:%S} resubmitted (attempt {run.attempts + 1} of {max_attempts()}); " \
                        "it resumes from its last checkpoint"
        run_enqueue(run.pk)
        outcome = "resubmitted"
    run.save(update_fields=["log_tail", "lease_token", "status", "finished_at", "error", "heartbeat_at"])
    return outcome
