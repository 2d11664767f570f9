"""Publishing Celery tasks: by name, after commit, with one broker-down policy.

Services never import task modules (tasks import services, not the other way round): they name
the task, and its queue comes from CELERY_TASK_ROUTES unless the caller names one. A broker that
is down never fails the caller: the message is logged as not published and `publish` answers
False; every kind of work has a periodic repair that publishes it again (the pending-image
sweeper, the index sync, the training reaper).
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


def publish(task_name: str, *args: Any, queue: str | None = None, countdown: float | None = None) -> bool:
    """Send the task now (to run `countdown` seconds from now, if given); False (logged) if the
    broker could not take it."""
    from project.celery import app

    options: dict[str, Any] = {"queue": queue} if queue else {}
    if countdown:
        options["countdown"] = countdown
    try:
        app.send_task(task_name, args=list(args), retry=False, **options)
        return True
    except Exception as exc:  # kombu raises many connection error types; all mean "not published"
        logger.warning("broker unavailable, %s%r not published (its periodic repair publishes it again): %s",
                       task_name, tuple(args), exc)
        return False


def enqueue(task_name: str, *args: Any, queue: str | None = None) -> None:
    """Send the task once the current transaction commits (never if it rolls back)."""
    transaction.on_commit(lambda: publish(task_name, *args, queue=queue))
