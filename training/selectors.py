"""Reads of the training app: runs, their live progress, model versions and switches."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from embeddings.models import ModelVersion
from training.models import ModelSwitch, TrainingRun

# Dev metrics shown side by side, per kind, in this order.
COMPARED_METRICS = {
    "embedding": ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"],
    "captioner": ["bleu_1", "bleu_4", "rouge_l", "cider_d"],
    "paragraph": ["p2i_r1", "p2i_r5", "p2i_r10", "p2d_r1", "p2d_r5", "p2d_r10"],
}
# the self-critical phase's per-epoch means (training.ml.scst), drawn as their own chart
REWARD_SERIES = ("scst_reward", "scst_baseline", "scst_greedy")


def primary_metric(kind: str, metrics: dict[str, float]) -> float | None:
    """The score promotion compares: dev R@1 (mean of both directions) for embeddings,
    CIDEr-D for captioners, mean paragraph->image / paragraph->description R@1 for paragraph models."""
    if kind == "embedding":
        if "i2t_r1" in metrics and "t2i_r1" in metrics:
            return (float(metrics["i2t_r1"]) + float(metrics["t2i_r1"])) / 2
        return None
    if kind == "paragraph":  # mean R@1 of paragraph -> image and paragraph -> description
        if "p2i_r1" in metrics and "p2d_r1" in metrics:
            return (float(metrics["p2i_r1"]) + float(metrics["p2d_r1"])) / 2
        return None
    value = metrics.get("cider_d")
    return None if value is None else float(value)


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("model_version", "created_by").prefetch_related("collections")


def training_run_get(*, run_id: int) -> TrainingRun | None:
    return training_run_list().filter(pk=run_id).first()


def model_version_list(*, kind: str | None = None) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.select_related("parent").order_by("kind", "-created_at")
    return qs.filter(kind=kind) if kind else qs


def model_version_get(*, version_id: int) -> ModelVersion | None:
    return model_version_list().filter(pk=version_id).first()


def switch_get(*, switch_id: int) -> ModelSwitch | None:
    return ModelSwitch.objects.filter(pk=switch_id).select_related("version", "previous").first()


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def eta_seconds(run: TrainingRun, now: datetime | None = None) -> float | None:
    """Time left at this attempt's pace (steps done since it started / seconds since)."""
    if run.status != TrainingRun.Status.RUNNING or not run.total_steps:
        return None
    event = run.last_event or {}
    started = _parse(event.get("attempt_started_at"))
    done = run.step - int(event.get("attempt_start_step") or 0)
    if started is None or done <= 0:
        return None
    elapsed = ((now or timezone.now()) - started).total_seconds()
    return max(0.0, elapsed / done * (run.total_steps - run.step))


def switch_progress(switch: ModelSwitch, now: datetime | None = None) -> dict[str, Any]:
    """A promotion's images done of total, with its rate (images/s since it was created) and the
    ETA at that rate while it runs."""
    elapsed = ((now or timezone.now()) - switch.created_at).total_seconds() if switch.created_at else 0.0
    rate = switch.done / elapsed if elapsed > 0 and switch.done else None
    running = switch.status not in (ModelSwitch.Status.SUCCEEDED, ModelSwitch.Status.FAILED)
    eta = (switch.total - switch.done) / rate if running and rate else None
    return {"done": switch.done, "total": switch.total, "rate": rate, "eta_s": eta}


def run_comparison(run: TrainingRun) -> dict[str, Any] | None:
    """The finished run's dev metrics beside the active version's (on the same dev split)."""
    version = run.model_version
    if version is None:
        return None
    metrics = version.metrics or {}
    other = metrics.get("compared_with") or {}
    mine, theirs = metrics.get("dev") or {}, other.get("dev") or {}
    names = [n for n in COMPARED_METRICS.get(run.kind, []) if n in mine or n in theirs]
    names += sorted(n for n in mine if n not in names and not n.endswith("medr"))
    return {
        "candidate": {"id": version.pk, "name": version.name, "status": version.status},
        "active": ({"id": other.get("version"), "name": other.get("name"), "error": other.get("error")}
                   if other else None),
        "rows": [{"metric": n, "candidate": mine.get(n), "active": theirs.get(n),
                  "better": (mine.get(n) is not None and theirs.get(n) is not None and mine[n] > theirs[n])}
                 for n in names],
        "primary": {"candidate": primary_metric(run.kind, mine), "active": primary_metric(run.kind, theirs)},
    }


def run_progress(run: TrainingRun) -> dict[str, Any]:
    """Everything the run page and the API show about a run, JSON-safe."""
    event = run.last_event or {}
    # a phase before or after the epochs (features, scoring the active version), while it runs
    phase = event.get("phase") if run.status == TrainingRun.Status.RUNNING else None
    percent = 100.0 * run.step / run.total_steps if run.total_steps else 0.0
    if run.status == TrainingRun.Status.SUCCEEDED:
        percent = 100.0
    return {
        "id": run.pk, "kind": run.kind, "status": run.status, "epoch": run.epoch, "total_epochs": run.total_epochs,
        "step": run.step, "total_steps": run.total_steps, "percent": round(percent, 1),
        "eta_s": eta_seconds(run) if not phase else phase.get("eta_s"),
        "phase": phase, "train_phase": event.get("train_phase"), "lr": event.get("lr"),
        "samples_per_s": event.get("samples_per_s"),
        "losses": event.get("losses") or {}, "device": run.device, "worker_host": run.worker_host,
        "attempts": run.attempts, "cancel_requested": run.cancel_requested,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "history": run.history or [], "log_tail": run.log_tail, "error": run.error,
        "model_version": run.model_version_id, "comparison": run_comparison(run),
        "finished": run.status not in TrainingRun.ACTIVE_STATUSES,
    }


def chart_series(run: TrainingRun) -> dict[str, Any]:
    """Per-epoch curves for Chart.js: losses (train), dev metrics, and the self-critical phase's
    mean reward and baseline (CIDEr-D of the sampled captions; None on cross-entropy epochs)."""
    history = run.history or []
    epochs = [h.get("epoch") for h in history]
    losses = sorted({k for h in history for k in (h.get("train") or {}) if k.endswith("_loss")})
    dev = [n for n in COMPARED_METRICS.get(run.kind, []) if any(n in (h.get("dev") or {}) for h in history)]
    rewards = [k for k in REWARD_SERIES if any(k in (h.get("train") or {}) for h in history)]
    return {
        "epochs": epochs,
        "losses": {k: [(h.get("train") or {}).get(k) for h in history] for k in losses},
        "dev": {k: [(h.get("dev") or {}).get(k) for h in history] for k in dev},
        "rewards": {k: [(h.get("train") or {}).get(k) for h in history] for k in rewards},
        "phases": [h.get("phase") for h in history],
    }
