"""A running job's side of the database: lease, heartbeat, progress events and log tail.

Every write a running job makes is guarded by its lease token
(`TrainingRun.objects.filter(pk=.., lease_token=token).update(...)`), so a job whose lease
was taken over (its heartbeat stopped, the reaper resubmitted the run and another worker
took it) can no longer touch the row: its next write raises LeaseLost and it stops.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from training.models import TrainingRun

logger = logging.getLogger(__name__)
LOG_LINES = 200  # log lines kept in the run row
LOG_CHARS = 16_000


class LeaseLost(RuntimeError):
    """Another execution owns this run now; stop without writing anything."""


def heartbeat_interval() -> float:
    return float(settings.LOUPE_TRAINING_HEARTBEAT_S)


def heartbeat_timeout() -> float:
    """A running run whose heartbeat is older than this is considered dead (reaper, lease)."""
    return float(settings.LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S)


class Heartbeat:
    """Background thread refreshing `heartbeat_at` while the lease is ours."""

    def __init__(self, run_id: int, token: str, interval: float | None = None) -> None:
        self.run_id, self.token = run_id, token
        self.interval = interval if interval is not None else heartbeat_interval()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"training-heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    n = TrainingRun.objects.filter(pk=self.run_id, lease_token=self.token).update(
                        heartbeat_at=timezone.now())
                except DatabaseError as exc:  # database briefly away: try again next beat
                    logger.warning("heartbeat of run %s failed: %s", self.run_id, exc)
                    close_old_connections()
                    continue
                if n == 0:
                    logger.warning("run %s: lease lost; stopping", self.run_id)
                    self.lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection


class _LogCapture(logging.Handler):
    def __init__(self, recorder: RunRecorder) -> None:
        super().__init__(level=logging.INFO)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("training.services.progress"):
            return  # our own messages are added directly
        self.recorder.add_line(f"{record.levelname.lower()} {record.name}: {record.getMessage()}")


class RunRecorder:
    """Turns trainer events into row updates (throttled) and keeps the log tail."""

    def __init__(self, run: TrainingRun, token: str, *, on_progress: Callable[[str, dict], None] | None = None,
                 min_interval: float = 1.0) -> None:
        self.run_id, self.token = run.pk, token
        self.on_progress = on_progress
        self.min_interval = min_interval
        self.lines: deque[str] = deque(run.log_tail.splitlines()[-LOG_LINES:], maxlen=LOG_LINES)
        self.history: list[dict] = list(run.history or [])
        self.fields: dict[str, Any] = {}
        self.last_event: dict[str, Any] = dict(run.last_event or {})
        self._last_write = 0.0
        self._epoch_rates: list[float] = []  # samples/s of this epoch's step events
        self._capture = _LogCapture(self)

    def reload(self) -> None:
        """Take over what another process (torchrun's rank 0) wrote under our lease."""
        run = TrainingRun.objects.get(pk=self.run_id)
        self.history, self.last_event = list(run.history or []), dict(run.last_event or {})
        self.lines = deque(run.log_tail.splitlines()[-LOG_LINES:], maxlen=LOG_LINES)

    # -- log -------------------------------------------------------------------------------
    def add_line(self, text: str) -> None:
        self.lines.append(f"{timezone.now():%H:%M:%S} {text}")

    def log(self, text: str) -> None:
        logger.info("run %s: %s", self.run_id, text)
        self.add_line(text)

    def __enter__(self) -> RunRecorder:
        logging.getLogger("training").addHandler(self._capture)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("training").removeHandler(self._capture)

    def log_tail(self) -> str:
        return "\n".join(self.lines)[-LOG_CHARS:]

    # -- writes ----------------------------------------------------------------------------
    def update(self, force: bool = True, **fields: Any) -> None:
        """Queue field values; write them (and the log tail) now or when the throttle allows."""
        self.fields.update(fields)
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        values = {**self.fields, "log_tail": self.log_tail(), "last_event": self.last_event,
                  "history": self.history}
        self.fields = {}
        if TrainingRun.objects.filter(pk=self.run_id, lease_token=self.token).update(**values) == 0:
            raise LeaseLost(f"run {self.run_id}: lease lost")

    def on_event(self, name: str, payload: dict) -> None:
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(payload)
        if self.on_progress is not None:
            self.on_progress(name, payload)

    def _on_prepare(self, p: dict) -> None:
        """A phase before (or after) the epochs: features being prepared, the active version being
        scored. Shown with counts, rate and ETA from its first call (done=0)."""
        previous = self.last_event.get("phase") or {}
        starting = previous.get("phase") != p["phase"]
        done, total = int(p["done"]), int(p["total"])
        self.last_event["phase"] = {"phase": p["phase"], "done": done, "total": total, "rate": p.get("rate"),
                                    "eta_s": p.get("eta_s"), "at": _iso(timezone.now())}
        finished = done >= total
        if starting:
            self.log(f"{p['phase']}: {done} of {total} ready" + ("" if finished else ", preparing the rest"))
        elif finished:
            rate = f" ({p['rate']:.1f}/s)" if p.get("rate") else ""
            self.log(f"{p['phase']}: all {total} ready after {p.get('elapsed_s', 0.0):.1f}s{rate}")
        self.update(force=starting or finished)

    def _on_start(self, p: dict) -> None:
        self.last_event.pop("phase", None)  # the epochs' own counters take over
        resumed = p.get("resumed_from_epoch")
        steps_done = (resumed or 0) * p["num_batches"]
        if resumed is not None:
            self.history = [h for h in self.history if h.get("epoch", 0) <= resumed]
        self.last_event.update({"attempt_started_at": _iso(timezone.now()), "attempt_start_step": steps_done,
                                "num_batches": p["num_batches"], "world_size": p.get("world_size", 1)})
        phases = p.get("phases") or []
        if len(phases) > 1:
            self.log("phases: " + ", then ".join(f"{ph['name']} (up to {ph['epochs']} epochs, lr {ph['lr']:g})"
                                                 for ph in phases))
        self.log(f"start: {p['epochs']} epochs x {p['num_batches']} steps on {p['device']}"
                 + (f" (world size {p['world_size']})" if p.get("world_size", 1) > 1 else "")
                 + (f", resumed after epoch {resumed}" if resumed is not None else ""))
        self.update(total_epochs=p["epochs"], total_steps=p["total_steps"], step=steps_done,
                    epoch=resumed or 0)

    def _on_phase(self, p: dict) -> None:
        """The next training phase starts (e.g. self-critical training after cross-entropy)."""
        self.last_event["train_phase"] = p["phase"]
        self.log(f"phase {p['phase']}: up to {p['epochs']} epochs from epoch {p['epoch'] + 1}, "
                 "starting from the best weights so far")
        self.update()

    def _on_step(self, p: dict) -> None:
        self._epoch_rates.append(float(p["samples_per_s"]))
        self.last_event.update({"epoch": p["epoch"], "step": p["step"], "losses": p["losses"], "lr": p["lr"],
                                "samples_per_s": p["samples_per_s"], "at": _iso(timezone.now())})
        if p.get("phase"):
            self.last_event["train_phase"] = p["phase"]
        self.update(force=False, step=p["step"])

    def _on_epoch(self, p: dict) -> None:
        self.history = [h for h in self.history if h.get("epoch", 0) < p["epoch"]]
        self.history.append({"epoch": p["epoch"], "train": p["train"], "dev": p["dev"],
                             "lr": self.last_event.get("lr"), "samples_per_s": _median(self._epoch_rates),
                             "improved": p["improved"], "at": _iso(timezone.now()),
                             **({"phase": p["phase"]} if p.get("phase") else {})})
        losses = [v for k, v in p["train"].items() if k.endswith("_loss")]
        dev = ", ".join(f"{k} {v:.2f}" for k, v in sorted(p["dev"].items())[:6])
        self._epoch_rates = []
        # gensim's Doc2Vec (the paragraph kind) reports no loss: say nothing rather than "loss 0"
        trained = f"train loss {sum(losses):.4f}" if losses else "trained"
        rewards = ", ".join(f"{k[len('scst_'):]} {v:.3f}" for k, v in sorted(p["train"].items())
                            if k in ("scst_reward", "scst_baseline"))
        trained += f" (reward {rewards})" if rewards else ""
        self.log(f"epoch {p['epoch']}{' ' + p['phase'] if p.get('phase') else ''}: {trained}"
                 + (f"; dev {dev}" if dev else "")
                 + (" (best so far)" if p["improved"] else ""))
        self.update(epoch=p["epoch"])

    def _on_checkpoint(self, p: dict) -> None:
        self.log(f"checkpoint after epoch {p['epoch']} (step {p['step']})")
        self.update()

    def _on_early_stop(self, p: dict) -> None:
        phase = f" of phase {p['phase']}" if p.get("phase") else ""
        self.log(f"early stop{phase} after epoch {p['epoch']}; best epoch {p['best_epoch']}")

    def _on_cancelled(self, p: dict) -> None:
        self.log(f"cancelled at epoch {p['epoch']}, step {p['step']}; the last checkpoint is kept")

    def _on_done(self, p: dict) -> None:
        """The final counts, written at once (step events are throttled, so the last ones may not
        be). A run that stopped early reads "18/18 steps", as its log says, not "10/45"; a
        cancelled one keeps its planned total ("stopped at 18 of 45")."""
        self.log(f"training {p['status']}: {p['epochs']} epochs, {p['steps']} steps in {p['wall_s']:.1f}s")
        final: dict[str, Any] = {"step": p["steps"], "epoch": p["epochs"]}
        if p["status"] != "cancelled":
            final |= {"total_steps": p["steps"], "total_epochs": p["epochs"]}
        self.update(**final)


def _median(values: list[float]) -> float | None:
    """Median throughput of an epoch's step events (None if it logged none)."""
    return statistics.median(values) if values else None


def _iso(value: datetime) -> str:
    return value.isoformat()
