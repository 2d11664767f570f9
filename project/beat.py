"""One Celery beat per installation: the scheduler holds an exclusive lock for its lifetime.

Two schedulers send every periodic task twice. That happened when a `worker -B` was SIGKILLed:
its embedded beat is a child process, which lives on, and the restarted worker started another.
However beat is started (`celery beat`, `worker -B`), it runs SingleBeatScheduler
(CELERY_BEAT_SCHEDULER), which takes an flock on settings.LOUPE_BEAT_LOCK_FILE before it opens
its schedule file; a second scheduler finds the lock taken and exits with a message naming the
holder's pid. The lock belongs to the open file, so the OS drops it when the holder dies, however
it dies: nothing stale to clean up after a SIGKILL. It guards one machine (one VAR_DIR), so beat
runs on one host (deploy/loupe-beat.service).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from celery.beat import PersistentScheduler
from django.conf import settings


class BeatAlreadyRunning(SystemExit):
    """Another scheduler holds the lock: this process must not schedule. A SystemExit, so the
    `celery beat` command (or the embedded beat's child process) exits with this message."""


def beat_lock(path: Path) -> IO[str]:
    """Take the scheduler lock at `path` and write this pid in it. The returned open file holds
    the lock: keep it open while scheduling. BeatAlreadyRunning if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # not "w": that would erase the holder's pid before we know we lost
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        # (SystemExit: `celery beat`, or the embedded beat's process, prints this and exits 1)
        raise BeatAlreadyRunning(f"another Celery beat (pid {holder}) holds {path}: "
                                 "not starting a second scheduler") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class SingleBeatScheduler(PersistentScheduler):
    """Celery's file-backed scheduler, started only while holding the beat lock."""

    _lock: IO[str] | None = None

    def setup_schedule(self) -> None:
        if self._lock is None:  # before the schedule file is opened: two writers would corrupt it
            self._lock = beat_lock(Path(settings.LOUPE_BEAT_LOCK_FILE))
        super().setup_schedule()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
