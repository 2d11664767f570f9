"""Hogwild: asynchronous lock-free training of one model by several CPU processes.

Recht et al. 2011 ("HOGWILD!"): processes update the same parameters in shared memory, each
reading whatever the others last wrote and writing its own step without locks; the
single-machine form of the asynchronous SGD of Downpour (Dean et al. 2012), which paired it
with Adagrad. PyTorch documents the pattern ("Hogwild" in the multiprocessing notes and
examples/mnist_hogwild): ``model.share_memory()``, then ``torch.multiprocessing`` processes
that each train it.

How it plugs into the generic loop (training.ml.trainer): ``HogwildHooks.setup`` moves the
parameters AND the optimiser state (AdamW moments or Adagrad's squared-gradient sums, created
eagerly) into shared memory, so every process steps the same tensors; ``train_epoch`` forks
``workers`` processes for each epoch. Every process draws the epoch's batches from the same
seeded generator and takes every ``workers``-th one (a disjoint share of the same epoch a
synchronous run sees); its step number for the learning-rate schedule is the global step it
would have in a round-robin interleaving. The parent meanwhile relays the processes' step
events, polls ``should_stop`` and, when they are done, runs the loop's own evaluation, early
stopping and checkpointing on the shared weights. Processes never touch the caller's callbacks
(in the product those write to the database).

CPU only, and forked (the task's cached tensors are inherited, not pickled): CUDA does not
survive fork. Each process uses one torch thread. Runs are not reproducible bit for bit: the
interleaving of the processes' writes is up to the OS scheduler.
"""

from __future__ import annotations

import dataclasses
import logging
import queue as queue_mod
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from training.ml.trainer import LoopHooks, TrainTask, _Progress, _Run, _train_step

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often the parent checks should_stop while the processes train


class _Share:
    """Every ``n``-th batch of an epoch, from offset ``k``: one process's part of the task."""

    def __init__(self, task: TrainTask, k: int, n: int) -> None:
        self.task, self.k, self.n = task, k, n
        self.model = task.model

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        for i, batch in enumerate(self.task.batches(epoch, generator)):
            if i % self.n == self.k:
                yield batch

    def num_batches(self) -> int:
        return len(range(self.k, self.task.num_batches(), self.n))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.task.loss(model, batch)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.task.evaluate(model)


def share_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's lazily-made state now and move every state tensor to shared memory.

    Adagrad creates its sums in its constructor; AdamW creates its moments at the first step,
    which in Hogwild would happen privately in each process and be lost with it.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if not state and isinstance(optimizer, torch.optim.AdamW):
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group.get("amsgrad"):
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for value in state.values():
                if isinstance(value, Tensor):
                    value.share_memory_()


class HogwildHooks(LoopHooks):
    """LoopHooks that run each epoch's steps in ``workers`` forked processes."""

    def __init__(self, workers: int, device: str | torch.device) -> None:
        if workers < 1:
            raise ValueError(f"hogwild needs workers >= 1, got {workers}")
        if torch.device(device).type != "cpu":
            raise ValueError(f"hogwild training runs on CPU processes, not on {device}")
        self.workers = workers
        self._ctx = mp.get_context("fork")

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        model.share_memory()
        share_optimizer_state(optimizer)

    def train_epoch(self, run: _Run, prog: _Progress) -> dict[str, float] | None:
        """Fork the processes for one epoch, relay their events, merge their mean losses."""
        messages = self._ctx.Queue()
        stop = self._ctx.Event()
        procs = [self._ctx.Process(target=_worker, args=(run, prog, k, self.workers, messages, stop),
                                   name=f"hogwild-{k}", daemon=True) for k in range(self.workers)]
        for p in procs:
            p.start()
        sums: dict[str, float] = defaultdict(float)
        steps, pending, failure, cancelled, last_step = 0, self.workers, None, False, prog.step
        try:
            while pending:
                if not cancelled and run.should_stop is not None and run.should_stop():
                    cancelled = True
                    stop.set()
                try:
                    kind, payload = messages.get(timeout=POLL_S)
                except queue_mod.Empty:
                    if not any(p.is_alive() for p in procs) and messages.empty():
                        failure = failure or "a hogwild process died without reporting (killed?)"
                        break
                    continue
                if kind == "step":
                    if payload["step"] > last_step:  # keep the relayed steps increasing
                        last_step = payload["step"]
                        run.emit("step", payload)
                elif kind == "done":
                    pending -= 1
                    steps += payload["steps"]
                    for key, value in payload["sums"].items():
                        sums[key] += value
                else:  # "error"
                    pending -= 1
                    failure = payload
                    stop.set()
        finally:
            stop.set()
            for p in procs:
                p.join()
        if failure is not None:
            raise RuntimeError(f"hogwild process failed: {failure}")
        prog.step += steps
        if cancelled:
            return None
        return {k: v / max(steps, 1) for k, v in sums.items()}


def _worker(run: _Run, prog: _Progress, k: int, n: int, messages: Any, stop: Any) -> None:
    """One process's share of an epoch; reports ("step"|"done"|"error", payload) on ``messages``."""
    try:
        torch.set_num_threads(1)  # one core per process: the processes are the parallelism
        torch.manual_seed(run.config.seed * 1_000_003 + prog.epoch * 1_009 + k)  # dropout differs per process
        base = prog.step  # global steps before this epoch
        mine = dataclasses.replace(prog)  # a private counter; the parent keeps the real one
        child = dataclasses.replace(run, task=_Share(run.task, k, n), should_stop=None,
                                    emit=lambda name, payload: messages.put((name, payload)))
        gen = torch.Generator().manual_seed(run.config.seed * 1_000_003 + prog.epoch)  # as the loop does
        child.model.train()
        sums: dict[str, float] = defaultdict(float)
        done, tick, seen = 0, time.perf_counter(), 0
        for i, batch in enumerate(child.task.batches(prog.epoch, gen)):
            if stop.is_set():
                break
            # The step this batch has in a round-robin interleaving of the n processes, so the
            # lr schedule advances as in a synchronous run over the same epoch.
            mine.step = base + i * n + k
            values, lr = _train_step(child, mine, {key: v.to(run.device) for key, v in batch.items()})
            done += 1
            seen += len(next(iter(batch.values())))
            for key, value in values.items():
                sums[key] += value
            if mine.step % run.config.log_every_steps == 0:  # each global step belongs to one process
                now = time.perf_counter()
                child.emit("step", {"epoch": prog.epoch + 1, "step": mine.step, "total_steps": run.total_steps,
                                    "losses": values, "lr": lr, "samples_per_s": n * seen / max(now - tick, 1e-9)})
                tick, seen = now, 0
        messages.put(("done", {"steps": done, "sums": dict(sums)}))
    except BaseException:  # reported to the parent, which raises it; a process must not die silently
        messages.put(("error", traceback.format_exc(limit=8)))
