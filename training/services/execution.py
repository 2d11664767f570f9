"""Executing a training run: take the lease, train with heartbeats, record the outcome.

`training_run_execute(run_id)` is what the Celery task and `manage.py train` call. A second
delivery of the same task while the first holds a live lease is a no-op; after the first
worker died (heartbeat stale), the next execution takes the lease and the trainer resumes
from the run's last checkpoint. Success writes a candidate ModelVersion; failure keeps the
error and log tail; cancel keeps the last checkpoint. None of them touches the active model
(auto-promotion, when enabled, is a separate promotion started afterwards).
"""
from __future__ import annotations

import json
import logging
import os
import socket
# bandit B404: torchrun launch with internal arguments, no shell
import subprocess  # nosec B404
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from embeddings import runtime
from embeddings.ml.atomic import atomic_write_bytes
from embeddings.models import ModelVersion
from project.exceptions import ApplicationError
from training import datasets
from training.encoders import encoders_for_version, get_encoders
from training.ml.config import TrainConfig, image_encoder_of
from training.models import NO_LEASE, TrainingRun
from training.services import fitting
from training.services.progress import Heartbeat, LeaseLost, RunRecorder, heartbeat_timeout

logger = logging.getLogger(__name__)
CANCEL_POLL_S = 0.5


def lease_acquire(run_id: int, *, device: str = "") -> str | None:
    """Take the run's lease if it is free (never taken, released, or its heartbeat is stale)."""
    token = uuid.uuid4().hex
    now = timezone.now()
    stale = now - timedelta(seconds=heartbeat_timeout())
    with transaction.atomic():
        n = (TrainingRun.objects.filter(pk=run_id, status__in=TrainingRun.ACTIVE_STATUSES, cancel_requested=False)
             .filter(Q(lease_token=NO_LEASE) | Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale))
             .update(lease_token=token, heartbeat_at=now, status=TrainingRun.Status.RUNNING,
                     attempts=F("attempts") + 1, worker_host=f"{socket.gethostname()} pid {os.getpid()}",
                     device=device))
        TrainingRun.objects.filter(pk=run_id, started_at__isnull=True, lease_token=token).update(started_at=now)
    return token if n else None


def device_label(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"cuda ({torch.cuda.get_device_name(0)}{f' x{count}' if count > 1 else ''})"
    return f"cpu ({torch.get_num_threads()} threads)"


def training_run_execute(run_id: int, *, on_progress: Callable[[str, dict], None] | None = None) -> TrainingRun | None:
    """Run (or resume) a queued run to its end. Returns None when another execution owns it."""
    device = runtime.device()
    token = lease_acquire(run_id, device=device_label(device))
    if token is None:
        logger.info("run %s: not queued, or leased by a live worker; nothing to do", run_id)
        _cancel_if_requested(run_id)
        return None
    run = TrainingRun.objects.get(pk=run_id)
    recorder = RunRecorder(run, token, on_progress=on_progress)
    try:
        with recorder, Heartbeat(run_id, token) as beat:
            recorder.log(f"attempt {run.attempts} on {run.worker_host}, {run.device}")
            try:
                outcome = _fit(run, token, recorder, beat, device)
            except LeaseLost:
                logger.warning("run %s: lease lost; another execution continues it", run_id)
                return None
            except Exception as exc:  # any failure of the job: record it on the run, keep the log
                logger.exception("run %s failed", run_id)
                _finish_failed(run_id, token, recorder, exc)
            else:
                _finish(run, token, recorder, outcome)
    except LeaseLost:
        logger.warning("run %s: lease lost while finishing; another execution continues it", run_id)
        return None
    # Released only now, after the heartbeat thread stopped.
    TrainingRun.objects.filter(pk=run_id, lease_token=token).update(lease_token=NO_LEASE)
    return TrainingRun.objects.get(pk=run_id)


def should_stop_poller(run_id: int, beat: Heartbeat | None = None) -> Callable[[], bool]:
    """The trainer's `should_stop`: cancel_requested, read at most every CANCEL_POLL_S."""
    last_poll, stop = 0.0, False

    def should_stop() -> bool:
        nonlocal last_poll, stop
        if beat is not None and beat.lost.is_set():
            raise LeaseLost(f"run {run_id}: lease lost")
        now = time.monotonic()
        if now - last_poll >= CANCEL_POLL_S:
            last_poll = now
            stop = TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists()
        return stop

    return should_stop


def _procs(device: str) -> int:
    wanted = int(settings.LOUPE_TRAINING_NPROC or 0)
    if wanted:
        return wanted
    if device.startswith("cuda"):
        import torch

        return torch.cuda.device_count()
    return 1


def _fit(run: TrainingRun, token: str, recorder: RunRecorder, beat: Heartbeat, device: str) -> fitting.FitOutcome:
    config = TrainConfig.from_dict(run.config)
    collection_ids = list(run.collections.values_list("pk", flat=True))
    if config.loop.parallel == "hogwild":  # CPU processes on this host, instead of DDP ranks
        recorder.log(f"hogwild: {config.loop.workers} CPU processes share the model (not {device}, not DDP)")
        device = "cpu"
    single = config.loop.parallel == "hogwild" or config.kind == "paragraph"  # gensim: one process, its own threads
    nproc = 1 if single else _procs(device)
    if nproc > 1:
        return _fit_torchrun(run, token, recorder, nproc, collection_ids)
    return fitting.fit(run_id=run.pk, collection_ids=collection_ids, config=config,
                       encoders=get_encoders(image_encoder_of(config)),
                       device=device, on_event=recorder.on_event, should_stop=should_stop_poller(run.pk, beat),
                       log=recorder.log)


def _fit_torchrun(run: TrainingRun, token: str, recorder: RunRecorder, nproc: int,
                  collection_ids: list[int]) -> fitting.FitOutcome:
    """Several GPUs on this host: one rank per GPU under torchrun (training/ddp_entry.py).

    Rank 0 reports progress with our lease token and writes `result.json`; this process keeps
    heartbeating meanwhile. Only taken when torch.cuda.device_count() > 1 (or
    LOUPE_TRAINING_NPROC > 1, which also works on CPU with the gloo backend).
    """
    # Freeze the data here, once: every rank then reads this same snapshot (ranks taking their
    # own would race on the file and could see different rows if captions change meanwhile).
    datasets.snapshot(collection_ids, fitting.run_dir(run.pk))
    recorder.log(f"launching torchrun with {nproc} processes")
    recorder.update()
    result_path = fitting.run_dir(run.pk) / "result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "training.ddp_entry", str(run.pk), token]
    # bandit B603: list, no shell
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)  # nosec B603
    output = proc.stdout + proc.stderr
    # all of it, for diagnosis
    atomic_write_bytes(fitting.run_dir(run.pk) / "torchrun.log", output.encode(), sync_dir=False)
    recorder.reload()
    for line in output.splitlines()[-60:]:
        recorder.add_line(f"torchrun: {line}")
    if proc.returncode != 0 or not result_path.exists():
        if not TrainingRun.objects.filter(pk=run.pk, lease_token=token).exists():
            raise LeaseLost(f"run {run.pk}: lease lost during torchrun")
        raise RuntimeError(f"torchrun exited with status {proc.returncode}: {_root_cause(proc.stderr)}")
    data = json.loads(result_path.read_text())
    return fitting.FitOutcome(**data)


def _root_cause(stderr: str) -> str:
    """The failing rank's exception line from torchrun's summary (ddp_entry.main is @record-ed),
    else the last non-blank line of the output."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if "Root Cause (first observed failure):" in lines:
        tail = lines[lines.index("Root Cause (first observed failure):"):]
        tail = [line for line in tail if not line.startswith("=")]
        return tail[-1] if tail else ""
    return lines[-1] if lines else ""


def _finish_failed(run_id: int, token: str, recorder: RunRecorder, exc: BaseException) -> None:
    recorder.log(f"failed: {type(exc).__name__}: {exc}")
    for line in traceback.format_exception(exc)[-6:]:
        recorder.add_line(line.rstrip())
    TrainingRun.objects.filter(pk=run_id, lease_token=token).update(
        status=TrainingRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000],
        log_tail=recorder.log_tail(), history=recorder.history, last_event=recorder.last_event,
        finished_at=timezone.now())


def _cancel_if_requested(run_id: int) -> None:
    """A run cancelled before any worker leased it ends here, when its task arrives."""
    TrainingRun.objects.filter(
        pk=run_id, status=TrainingRun.Status.QUEUED, cancel_requested=True, lease_token=NO_LEASE
    ).update(status=TrainingRun.Status.CANCELLED, finished_at=timezone.now())


def _family(run: TrainingRun) -> str:
    """The version's family as its config says (a ConSE-prior run is "prior", not "joint")."""
    if run.kind == ModelVersion.Kind.PARAGRAPH:
        return str(ModelVersion.Family.DOC2VEC)
    if run.kind != ModelVersion.Kind.EMBEDDING:
        return str(ModelVersion.Family.CAPTIONER)
    family = (run.config.get("model") or {}).get("family", "joint")
    return str(ModelVersion.Family(family))


def _finish(run: TrainingRun, token: str, recorder: RunRecorder, outcome: fitting.FitOutcome) -> None:
    from training.services import promotion

    if outcome.status == "cancelled":
        recorder.update(status=TrainingRun.Status.CANCELLED, finished_at=timezone.now())
        return
    active = runtime.active_version(run.kind)
    baseline = _baseline(run, active, recorder)
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().filter(pk=run.pk, lease_token=token).first()
        if locked is None:
            raise LeaseLost(f"run {run.pk}: lease lost before the model was registered")
        version = ModelVersion.objects.create(
            kind=run.kind, name=f"{run.kind}-run{run.pk}", family=_family(run),
            status=ModelVersion.Status.CANDIDATE, directory=outcome.directory, files=outcome.files,
            config=run.config, encoders=outcome.encoders, dim=outcome.dim, parent=active,
            metrics={"dev": outcome.dev_metrics, "best_epoch": outcome.best_epoch, "stop": outcome.stop_reason,
                     "data": outcome.data, "run": run.pk,
                     "collections": list(run.collections.values_list("name", flat=True)),
                     "compared_with": baseline})
        recorder.log(f"registered candidate {version.name} (v{version.pk})")
        recorder.update(status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now(), model_version=version)
    if promotion.should_auto_promote(version):
        recorder.log("candidate beats the active version by the configured margin: promoting")
        try:
            promotion.model_version_promote(version=version, user=None)
        except ApplicationError as exc:  # e.g. another promotion in progress: stays a candidate
            recorder.log(f"auto-promotion not started: {exc.message}")
        recorder.update()


def _baseline(run: TrainingRun, active: ModelVersion | None, recorder: RunRecorder) -> dict | None:
    if active is None:
        return None
    phase = f"scoring the active version {active.name} on dev"
    recorder.on_event("prepare", {"phase": phase, "done": 0, "total": 1, "rate": None, "eta_s": None})
    try:
        metrics = fitting.baseline_metrics(version=active, run_id=run.pk, encoders=encoders_for_version(active))
    except Exception as exc:  # the comparison is informative only; the run itself succeeded
        recorder.log(f"could not score the active version {active.name} on dev: {type(exc).__name__}: {exc}")
        return {"version": active.pk, "name": active.name, "dev": {}, "error": str(exc)[:500]}
    recorder.on_event("prepare", {"phase": phase, "done": 1, "total": 1, "rate": None, "eta_s": 0.0})
    recorder.log(f"active version {active.name} on the same dev split: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())[:6]))
    return {"version": active.pk, "name": active.name, "dev": metrics}
