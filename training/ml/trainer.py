"""One generic training loop for every model kind (nanoGPT style).

The loop knows nothing of the model family. A ``TrainTask`` owns the model, yields batches
(dicts of tensors), turns a batch into named losses and scores the model on dev; the loop
does the rest: AdamW with linear warmup then cosine decay, bf16 autocast on CUDA, global
grad-norm clipping, early stopping on a dev metric keeping the BEST weights, progress events
through ``on_event``, cancellation through ``should_stop`` (polled before every step), and a
resumable state in ``checkpoint_dir``.

Determinism: the loop seeds Python, NumPy and torch from ``config.seed`` and hands the task
a fresh ``torch.Generator`` seeded from (seed, epoch) for each epoch's sampling, so the same
seed gives the same run. Model initialisation happens before ``train`` (the task's
constructor), so seed that yourself.

Resume: after every ``checkpoint_every_epochs`` epochs the loop writes ``last.json`` +
safetensors (via embeddings.ml.checkpoint, atomically): model, optimizer state, the best
weights so far, RNG states, epoch/step counters and history; never a pickle. ``train`` on a
directory holding one continues after that epoch and ends with bit-identical weights to an
uninterrupted run on CPU. Cancelling keeps the last checkpoint as it was.

Phases (training.ml.phases): the loop's epochs, then any ``task.extra_phases()`` (e.g. the
caption task's self-critical phase), each from the best weights so far with its own lr schedule;
``task.begin_phase(name)``, when defined, is called as each phase starts (and on resume).

Events (``on_event(name, payload)``), ``epoch`` numbers 1-based and counted across phases:
start (epochs, num_batches, total_steps, phases, ...), phase (phase, epoch, step, epochs), step
(epoch, step, total_steps, losses, lr, samples_per_s, phase), epoch (epoch, train, dev,
best_metric, best_epoch, improved, phase), checkpoint (epoch, step, path), early_stop (epoch,
best_epoch, best_metric, phase), cancelled, done (status, best_epoch, best_metric, epochs, steps,
wall_s).

Optimiser: AdamW by default, or Adagrad (``LoopConfig.optimizer``). Parallelism: one process,
DDP ranks (training.ml.distributed) or Hogwild processes (training.ml.hogwild,
``LoopConfig.parallel``); the last two plug in through ``LoopHooks``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from embeddings.ml.checkpoint import CheckpointError, IncompatibleCheckpoint, load_checkpoint, save_checkpoint
from training.ml.config import LoopConfig
from training.ml.phases import Phase, check_phases, run_phases
from training.ml.state import pack_state, rng_state, set_rng_state, unpack_state

logger = logging.getLogger(__name__)

EventFn = Callable[[str, dict], None]
STATE_FILE = "last.json"
STATE_KIND = "trainer-state"
# Config fields that may change between a run and its resume without changing the result.
_RESUME_FREE_FIELDS = {"checkpoint_every_epochs", "log_every_steps"}


class TrainTask(Protocol):
    """What a model family provides to the loop."""

    model: nn.Module

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[dict[str, Tensor]]:
        """One epoch of training batches (0-based ``epoch``), sampled with ``generator``."""
        ...

    def num_batches(self) -> int:
        """How many batches ``batches`` yields per epoch."""
        ...

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named parts; keys ending in "_loss" are summed and optimised, the rest logged.

        Call ``model(...)`` (forward), not its other methods, so DDP can sync gradients.
        """
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Dev metrics (the loop sets eval mode and no_grad)."""
        ...


@dataclass
class TrainResult:
    status: str  # "completed" | "early_stop" | "cancelled"
    epochs: int  # epochs completed
    steps: int  # optimizer steps taken
    best_epoch: int | None  # 1-based epoch of the best dev metric
    best_metric: float | None
    best_metrics: dict[str, float]  # all dev metrics at the best epoch
    history: list[dict] = field(default_factory=list)  # per epoch: {"epoch", "train", "dev"}
    resumed_from_epoch: int | None = None
    wall_s: float = 0.0


class LoopHooks:
    """Single-process behaviour; training.ml.distributed overrides it for DDP."""

    is_main = True
    world_size = 1

    def wrap(self, model: nn.Module) -> nn.Module:
        return model  # the module called in the training forward

    def shard(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return batch

    def agree_stop(self, flag: bool) -> bool:
        return flag

    def evaluate(self, task: TrainTask, model: nn.Module) -> dict[str, float]:
        return {k: float(v) for k, v in task.evaluate(model).items()}

    def after_step(self, model: nn.Module) -> None:
        pass

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once the model, optimizer and any resumed state are in place."""

    def train_epoch(self, run: _Run, prog: _Progress) -> dict[str, float] | None:
        """One epoch of steps (training.ml.hogwild spreads it over processes)."""
        return _train_epoch(run, prog)


@dataclass
class _Progress:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    status: str = "running"
    history: list[dict] = field(default_factory=list)
    phase: int = 0  # index into the run's phases
    phase_epoch: int = 0  # epochs completed when the current phase started
    phase_step: int = 0  # steps taken when the current phase started


def train(
    config: LoopConfig,
    task: TrainTask,
    *,
    device: str | torch.device,
    on_event: EventFn | None = None,
    checkpoint_dir: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``task.model`` in place; on return it holds the best (or last) weights.

    ``config.parallel == "hogwild"`` runs each epoch's steps in ``config.workers`` CPU processes
    sharing the parameters (training.ml.hogwild); everything else is the same loop.
    """
    hooks = LoopHooks()
    if config.parallel == "hogwild":
        from training.ml.hogwild import HogwildHooks  # imports this module

        hooks = HogwildHooks(config.workers, device)
    return run_loop(config, task, device=device, on_event=on_event, checkpoint_dir=checkpoint_dir,
                    should_stop=should_stop, hooks=hooks)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier on the peak lr at ``step`` (0-based): linear warmup, then cosine to min_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def run_loop(
    config: LoopConfig,
    task: TrainTask,
    *,
    device: str | torch.device,
    on_event: EventFn | None,
    checkpoint_dir: Path | None,
    should_stop: Callable[[], bool] | None,
    hooks: LoopHooks,
) -> TrainResult:
    t0 = time.perf_counter()
    device = torch.device(device)
    emit: EventFn = (on_event or (lambda name, payload: None)) if hooks.is_main else (lambda n, p: None)
    _seed_everything(config.seed)
    model = task.model.to(device)
    optimizer = _build_optimizer(model, config)
    n_batches = task.num_batches()
    phases = run_phases(config, task)
    check_phases(phases, config, hooks.world_size)
    total_epochs = sum(p.epochs for p in phases)  # upper bound over all phases
    total_steps = total_epochs * n_batches
    prog, best_weights = _Progress(), None
    resumed = None
    if checkpoint_dir is not None and (Path(checkpoint_dir) / STATE_FILE).exists():
        prog, best_weights = _load_state(Path(checkpoint_dir), config, model, optimizer, n_batches, device)
        resumed = prog.epoch
        if prog.phase >= len(phases):
            raise IncompatibleCheckpoint(f"{checkpoint_dir}: saved in phase {prog.phase + 1}, "
                                         f"this run has {len(phases)}")
    hooks.setup(model, optimizer)
    train_model = hooks.wrap(model)
    emit("start", {"epochs": total_epochs, "num_batches": n_batches, "total_steps": total_steps,
                   "resumed_from_epoch": resumed, "device": str(device), "world_size": hooks.world_size,
                   "phases": [dataclasses.asdict(p) for p in phases]})
    run = _Run(config=config, task=task, model=model, train_model=train_model, optimizer=optimizer,
               device=device, hooks=hooks, emit=emit, total_steps=total_steps,
               autocast=_autocast(config, device), should_stop=should_stop, phases=phases, n_batches=n_batches)
    _begin_phase(task, phases[prog.phase])
    while True:
        phase = phases[prog.phase]
        if prog.status == "running" and prog.epoch - prog.phase_epoch < phase.epochs:
            train_means = hooks.train_epoch(run, prog)
            if train_means is None:
                emit("cancelled", {"epoch": prog.epoch + 1, "step": prog.step})
                return _finish(prog, "cancelled", model, best_weights, config, resumed, t0, emit)
            last = prog.epoch + 1 == prog.phase_epoch + phase.epochs  # evaluated at every phase's end
            best_weights = _end_epoch(config, task, model, prog, train_means, best_weights, hooks, emit,
                                      last=last, phase=phase.name)
            if checkpoint_dir is not None and hooks.is_main and (
                prog.epoch % config.checkpoint_every_epochs == 0 or last or prog.status != "running"
            ):
                path = _save_state(Path(checkpoint_dir), config, model, optimizer, prog, best_weights, n_batches)
                emit("checkpoint", {"epoch": prog.epoch, "step": prog.step, "path": str(path)})
            continue
        if prog.status == "early_stop":
            emit("early_stop", {"epoch": prog.epoch, "best_epoch": prog.best_epoch, "best_metric": prog.best_metric,
                                "phase": phase.name})
        if prog.phase + 1 >= len(phases) or prog.status not in ("running", "early_stop"):
            break
        _next_phase(run, prog, best_weights)
    return _finish(prog, prog.status if prog.status != "running" else "completed",
                   model, best_weights, config, resumed, t0, emit)


def _begin_phase(task: TrainTask, phase: Phase) -> None:
    begin = getattr(task, "begin_phase", None)
    if begin is not None:
        begin(phase.name)


def _next_phase(run: _Run, prog: _Progress, best_weights: dict | None) -> None:
    """Start the next phase from the best weights so far, with fresh optimiser moments."""
    prog.phase += 1
    prog.phase_epoch, prog.phase_step, prog.status, prog.bad_evals = prog.epoch, prog.step, "running", 0
    if run.config.restore_best and best_weights is not None:
        run.model.load_state_dict(best_weights)
    run.optimizer.state.clear()
    phase = run.phases[prog.phase]
    _begin_phase(run.task, phase)
    run.emit("phase", {"phase": phase.name, "epoch": prog.epoch, "step": prog.step, "epochs": phase.epochs})


@dataclass
class _Run:
    """Everything one epoch of training needs, fixed for the whole run."""

    config: LoopConfig
    task: TrainTask
    model: nn.Module  # the bare module (state dicts, clipping, evaluation)
    train_model: nn.Module  # what the training forward calls (DDP wrapper or the model)
    optimizer: torch.optim.Optimizer
    device: torch.device
    hooks: LoopHooks
    emit: EventFn
    total_steps: int
    autocast: contextlib.AbstractContextManager
    should_stop: Callable[[], bool] | None
    phases: list[Phase]
    n_batches: int


def _train_epoch(run: _Run, prog: _Progress) -> dict[str, float] | None:
    """One epoch of steps; mean of every named part, or None if cancelled."""
    epoch = prog.epoch  # 0-based index of the epoch being run
    run.model.train()
    gen = torch.Generator().manual_seed(run.config.seed * 1_000_003 + epoch)
    sums: dict[str, float] = defaultdict(float)
    n_steps, tick, seen = 0, time.perf_counter(), 0
    for batch in run.task.batches(epoch, gen):
        if run.should_stop is not None and run.hooks.agree_stop(bool(run.should_stop())):
            return None
        batch = {k: v.to(run.device, non_blocking=True) for k, v in run.hooks.shard(batch).items()}
        values, lr = _train_step(run, prog, batch)
        n_steps += 1
        seen += len(next(iter(batch.values()))) * run.hooks.world_size
        for k, v in values.items():
            sums[k] += v
        if prog.step % run.config.log_every_steps == 0:
            now = time.perf_counter()
            run.emit("step", {"epoch": epoch + 1, "step": prog.step, "total_steps": run.total_steps,
                              "losses": values, "lr": lr, "samples_per_s": seen / max(now - tick, 1e-9),
                              "phase": run.phases[prog.phase].name})
            tick, seen = now, 0
    return {k: v / max(n_steps, 1) for k, v in sums.items()}


def _train_step(run: _Run, prog: _Progress, batch: dict[str, Tensor]) -> tuple[dict[str, float], float]:
    """Forward, sum the *_loss parts, backward, clip, step; returns (logged values, lr)."""
    cfg, phase = run.config, run.phases[prog.phase]
    lr = phase.lr * lr_factor(prog.step - prog.phase_step, phase.epochs * run.n_batches, phase.warmup_steps,
                              phase.min_lr_ratio)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with run.autocast:
        parts = run.task.loss(run.train_model, batch)
    losses = [v for k, v in parts.items() if k.endswith("_loss")]
    if not losses:
        raise ValueError(f"the task's loss returned no *_loss part: {sorted(parts)}")
    loss = sum(losses[1:], losses[0])
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        parts["grad_norm"] = nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.hooks.after_step(run.model)
    prog.step += 1
    return {k: float(v.detach()) for k, v in parts.items()}, lr


def _end_epoch(config: LoopConfig, task: TrainTask, model: nn.Module, prog: _Progress,
               train_means: dict[str, float], best_weights: dict | None, hooks: LoopHooks,
               emit: EventFn, *, last: bool, phase: str) -> dict | None:
    """Evaluate, update best/patience, record history; returns the (new) best weights."""
    prog.epoch += 1
    dev: dict[str, float] = {}
    improved = False
    if prog.epoch % config.eval_every_epochs == 0 or last:
        model.eval()
        with torch.no_grad():
            dev = hooks.evaluate(task, model)
        model.train()
        metric = config.early_stop_metric
        if metric is not None:
            if metric not in dev:
                raise KeyError(f"early_stop_metric {metric!r} not in dev metrics {sorted(dev)}")
            value = dev[metric]
            sign = 1.0 if config.early_stop_mode == "max" else -1.0
            improved = prog.best_metric is None or sign * (value - prog.best_metric) > config.min_delta
            if improved:
                prog.best_metric, prog.best_epoch, prog.best_metrics = value, prog.epoch, dict(dev)
                prog.bad_evals = 0
                best_weights = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
            else:
                prog.bad_evals += 1
                if config.patience > 0 and prog.bad_evals >= config.patience:
                    prog.status = "early_stop"
    prog.history.append({"epoch": prog.epoch, "train": train_means, "dev": dev, "phase": phase})
    emit("epoch", {"epoch": prog.epoch, "train": train_means, "dev": dev, "best_metric": prog.best_metric,
                   "best_epoch": prog.best_epoch, "improved": improved, "phase": phase})
    return best_weights


def _finish(prog: _Progress, status: str, model: nn.Module, best_weights: dict | None,
            config: LoopConfig, resumed: int | None, t0: float, emit: EventFn) -> TrainResult:
    if status != "cancelled" and config.restore_best and best_weights is not None:
        model.load_state_dict(best_weights)
    wall = time.perf_counter() - t0
    emit("done", {"status": status, "best_epoch": prog.best_epoch, "best_metric": prog.best_metric,
                  "epochs": prog.epoch, "steps": prog.step, "wall_s": wall})
    return TrainResult(status=status, epochs=prog.epoch, steps=prog.step, best_epoch=prog.best_epoch,
                       best_metric=prog.best_metric, best_metrics=dict(prog.best_metrics),
                       history=list(prog.history), resumed_from_epoch=resumed, wall_s=wall)


def _build_optimizer(model: nn.Module, config: LoopConfig) -> torch.optim.Optimizer:
    """AdamW or Adagrad (``config.optimizer``); no weight decay on biases, norm gains and
    scalars (dim < 2), as in GPT/CLIP."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adagrad":
        # Adagrad's own eps default (1e-10) sits under sqrt(sum g^2); LoopConfig.eps is Adam's.
        return torch.optim.Adagrad(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def _autocast(config: LoopConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _save_state(directory: Path, config: LoopConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                prog: _Progress, best_weights: dict | None, n_batches: int) -> Path:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_weights is not None:
        tensors.update({f"best.{k}": v for k, v in best_weights.items()})
    opt_t, opt_tree = pack_state(optimizer.state_dict(), "optim")
    rng_t, rng_tree = pack_state(rng_state(), "rng")
    tensors.update(opt_t)
    tensors.update(rng_t)
    meta = {"kind": STATE_KIND, "progress": dataclasses.asdict(prog), "optimizer": opt_tree, "rng": rng_tree,
            "has_best": best_weights is not None, "num_batches": n_batches}
    cfg = json_safe_config(config)
    return save_checkpoint(directory / STATE_FILE, tensors=tensors, config=cfg, meta=meta)


def json_safe_config(config: LoopConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _load_state(directory: Path, config: LoopConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                n_batches: int, device: torch.device) -> tuple[_Progress, dict | None]:
    tensors, saved_cfg, meta = load_checkpoint(directory / STATE_FILE, expected_kind=STATE_KIND)
    now = json_safe_config(config)
    changed = sorted(k for k in set(now) | set(saved_cfg)
                     if k not in _RESUME_FREE_FIELDS and now.get(k) != saved_cfg.get(k))
    if changed:
        raise IncompatibleCheckpoint(f"{directory}: loop config differs from the saved run in {changed}")
    if meta.get("num_batches") != n_batches:
        raise IncompatibleCheckpoint(f"{directory}: saved run had {meta.get('num_batches')} batches per epoch")
    model_t = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_t, strict=True)
        optimizer.load_state_dict(unpack_state(meta["optimizer"], tensors))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise IncompatibleCheckpoint(f"{directory}: saved state does not fit this model: {exc}") from exc
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None
    try:
        set_rng_state(unpack_state(meta["rng"], tensors))
        prog = _Progress(**meta["progress"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}: unreadable trainer state: {exc}") from exc
    logger.info("resuming from %s at epoch %d, step %d", directory, prog.epoch, prog.step)
    return prog, best
