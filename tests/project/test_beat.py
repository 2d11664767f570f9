"""project/beat.py: exactly one Celery beat per VAR_DIR, and the sweeper's period is a setting
(issue 19, finding 6: after a SIGKILLed `worker -B` was restarted, two schedulers sent every
periodic task twice)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from project.beat import BeatAlreadyRunning, beat_lock

REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _holder(path: Path) -> subprocess.Popen:
    """Another process that takes the beat lock and sleeps."""
    code = ("import sys, time; from pathlib import Path; from project.beat import beat_lock; "
            "h = beat_lock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_refuses_a_second_holder_and_is_released_when_the_first_is_sigkilled(tmp_path):
    path = tmp_path / "celerybeat.lock"
    holder = _holder(path)
    try:
        with pytest.raises(BeatAlreadyRunning, match=f"pid {holder.pid}"):
            beat_lock(path)
        assert path.read_text().strip() == str(holder.pid)  # the loser did not erase the holder's pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    mine = beat_lock(path)  # the OS released the dead holder's lock: no stale file to clean up
    try:
        assert path.read_text().strip() == str(os.getpid())
    finally:
        mine.close()


def test_the_scheduler_takes_the_lock_before_opening_its_schedule(tmp_path, settings):
    from project.beat import SingleBeatScheduler
    from project.celery import app

    settings.LOUPE_BEAT_LOCK_FILE = tmp_path / "celerybeat.lock"
    assert app.conf.beat_scheduler == "project.beat:SingleBeatScheduler"  # `celery beat` and `worker -B` alike
    holder = _holder(settings.LOUPE_BEAT_LOCK_FILE)
    try:
        with pytest.raises(BeatAlreadyRunning):
            SingleBeatScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
        assert not list(tmp_path.glob("schedule*"))  # the schedule file was never opened
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    scheduler = SingleBeatScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
    scheduler.close()
    SingleBeatScheduler(app=app, schedule_filename=str(tmp_path / "schedule")).close()  # close() released it


def _beat(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel=INFO"],
                            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_second_celery_beat_exits_while_one_runs_and_the_sweeper_period_reaches_the_schedule(tmp_path):
    """Real `celery beat` processes on the embedded default (file-system broker)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "project.settings", "LOUPE_VAR_DIR": str(tmp_path / "var"),
                "LOUPE_SWEEP_PERIOD_S": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    lock, first_log, second_log = tmp_path / "var" / "celerybeat.lock", tmp_path / "beat1.log", tmp_path / "beat2.log"
    first = _beat(env, first_log)
    try:
        _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 120, "the first beat's lock")
        sent = "Sending due task sweep-pending-images"
        # every LOUPE_SWEEP_PERIOD_S = 1 s instead of the default 60 s
        _wait_for(lambda: first_log.read_text().count(sent) >= 2, 60, "two sweeps from a 1 s period")
        second = _beat(env, second_log)
        assert second.wait(timeout=120) != 0
        out = second_log.read_text()
        assert f"another Celery beat (pid {first.pid}) holds {lock}" in out, out
        assert sent not in out and first.poll() is None
        first.send_signal(signal.SIGKILL)  # dies without a shutdown: the OS drops its lock
        first.wait(timeout=30)
        third = _beat(env, tmp_path / "beat3.log")
        try:
            _wait_for(lambda: lock.read_text().strip() == str(third.pid), 120, "the next beat to take over")
        finally:
            third.terminate()
            third.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
