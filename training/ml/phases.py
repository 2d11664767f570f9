"""Training phases: the loop's epochs as one or more consecutive stages with their own lr.

A run is the loop's main phase (``LoopConfig.epochs``, ``lr``, warm-up and cosine decay) followed
by whatever further phases the task asks for (``task.extra_phases()``; the caption task adds
self-critical sequence training after cross-entropy). Each phase starts from the best weights
so far (with ``restore_best``), with fresh optimiser moments, its own lr schedule over its own
steps, and a fresh early-stopping patience; the best dev metric is tracked across phases, so a
phase that never beats the previous one leaves the run with the earlier weights. A phase that
stops early hands over to the next one; only the last phase's early stop ends the run.

Pure: no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.ml.config import LoopConfig


@dataclass(frozen=True)
class Phase:
    """One stage of a run: ``epochs`` (upper bound) with its own learning-rate schedule."""

    name: str  # shown in progress events ("xe", "scst", ...)
    epochs: int
    lr: float  # peak lr of the phase
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0  # cosine decay to lr * min_lr_ratio over the phase; 1.0 = constant

    def __post_init__(self) -> None:
        if not self.name or self.epochs < 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"bad phase {self!r}: needs a name, epochs >= 0, lr > 0, warmup_steps >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")


def run_phases(config: LoopConfig, task: Any) -> list[Phase]:
    """The main phase from ``config`` and the task's extra phases (those with epochs > 0)."""
    main = Phase(name=str(getattr(task, "main_phase", "train")), epochs=config.epochs, lr=config.lr,
                 warmup_steps=config.warmup_steps, min_lr_ratio=config.min_lr_ratio)
    extra: Sequence[Phase] = getattr(task, "extra_phases", lambda: [])()
    return [main, *[p for p in extra if p.epochs > 0]]


def check_phases(phases: Sequence[Phase], config: LoopConfig, world_size: int) -> None:
    """Extra phases run in one process: their optimiser reset and sampling are not shared."""
    if len(phases) > 1 and (config.parallel != "sync" or world_size > 1):
        names = ", ".join(p.name for p in phases[1:])
        raise ValueError(f"the {names} phase(s) need a single synchronous process "
                         f"(parallel={config.parallel!r}, world size {world_size})")
