"""Data-parallel training (DDP under torchrun) around the same generic loop.

Every rank builds the same task with the same seed, so every rank draws the same GLOBAL
batch from its sampling generator; ``DDPHooks.shard`` keeps this rank's contiguous slice of
rows (image rows and their caption rows stay together because the task lays captions out
group by group). DDP averages gradients across ranks; tasks whose loss couples samples
(contrastive losses) gather vectors across ranks first (see embedding_task._gather), so a
DDP step equals a single-process step on the global batch up to float summation order.

Backend: NCCL when training on CUDA, gloo on CPU. Rank 0 alone evaluates (and broadcasts
the metrics as JSON bytes, never pickles), emits events and writes the resume checkpoint;
every rank reads it on resume (shared filesystem). ``should_stop`` on any rank stops all.

Optional post-local SGD (``average_every > 0``): after ``local_sgd_warmup`` ordinary DDP
steps, ranks stop all-reducing gradients and instead average parameters every
``average_every`` steps (torch's PeriodicModelAverager with the post_localSGD comm hook);
parameters are also averaged before every evaluation so all ranks agree. Optimizer states
then differ between ranks and a resume restarts them from rank 0's.

Launch: ``torchrun --nproc-per-node=N script.py`` where the script calls
``train_distributed(...)``; tests may instead init a gloo group themselves.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from training.ml.config import LoopConfig
from training.ml.trainer import EventFn, LoopHooks, TrainResult, TrainTask, run_loop

if TYPE_CHECKING:
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistConfig:
    backend: str | None = None  # None: "nccl" on CUDA, "gloo" on CPU
    average_every: int = 0  # > 0: post-local SGD, average parameters every N steps
    local_sgd_warmup: int = 0  # plain DDP steps before local SGD starts
    find_unused_parameters: bool = True  # e.g. the logit scale when only the hinge loss is used

    def __post_init__(self) -> None:
        if self.average_every < 0 or self.local_sgd_warmup < 0:
            raise ValueError("average_every and local_sgd_warmup must be >= 0")


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the torchrun process group (env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Returns (rank, world_size, device); a no-op if a group already exists.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and backend in (None, "nccl")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device


class DDPHooks(LoopHooks):
    """LoopHooks for one rank of a DDP run (process group already initialised)."""

    def __init__(self, device: torch.device, dist_config: DistConfig) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = device
        self.cfg = dist_config
        self.averager: PeriodicModelAverager | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(  # broadcasts rank 0's weights
            model, device_ids=ids, find_unused_parameters=self.cfg.find_unused_parameters)
        if self.cfg.average_every > 0:
            from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
                PostLocalSGDState,
                post_localSGD_hook,
            )
            from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

            # Local steps talk to no one on CPU (one-rank subgroups); on CUDA torch's default
            # subgroup is the node, so local steps still all-reduce over fast intra-node links.
            subgroup = None if self.device.type == "cuda" else dist.new_subgroups(group_size=1)[0]
            state = PostLocalSGDState(process_group=None, subgroup=subgroup,
                                      start_localSGD_iter=self.cfg.local_sgd_warmup)
            ddp.register_comm_hook(state, post_localSGD_hook)
            self.averager = PeriodicModelAverager(period=self.cfg.average_every,
                                                  warmup_steps=self.cfg.local_sgd_warmup)
        return ddp

    def shard(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for key, value in batch.items():
            rows = value.shape[0]
            if rows % self.world_size:
                raise ValueError(f"batch[{key!r}] has {rows} rows, not divisible by {self.world_size} ranks")
            per = rows // self.world_size
            out[key] = value[self.rank * per:(self.rank + 1) * per]
        return out

    def agree_stop(self, flag: bool) -> bool:
        t = torch.tensor([int(flag)], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def after_step(self, model: nn.Module) -> None:
        if self.averager is not None:
            self.averager.average_parameters(model.parameters())

    def evaluate(self, task: TrainTask, model: nn.Module) -> dict[str, float]:
        if self.averager is not None:
            average_parameters(model)
        metrics = {k: float(v) for k, v in task.evaluate(model).items()} if self.is_main else {}
        return broadcast_json(metrics, device=self._comm_device())

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def average_parameters(model: nn.Module) -> None:
    """Replace every parameter by its mean over ranks."""
    world = dist.get_world_size()
    with torch.no_grad():
        for p in model.parameters():
            dist.all_reduce(p.data, op=dist.ReduceOp.SUM)
            p.data.div_(world)


def broadcast_json(obj: dict, *, device: torch.device, src: int = 0) -> dict:
    """Send a JSON-serialisable dict from ``src`` to every rank (as bytes, not pickle)."""
    if dist.get_rank() == src:
        data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
        size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    else:
        size = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(size, src)
    if dist.get_rank() != src:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(data, src)
    return json.loads(bytes(data.cpu().tolist()).decode())


def train_distributed(
    config: LoopConfig,
    task: TrainTask,
    *,
    device: str | torch.device | None = None,
    on_event: EventFn | None = None,
    checkpoint_dir: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist_config: DistConfig = DistConfig(),
) -> TrainResult:
    """``trainer.train`` for one rank of a data-parallel run; joins torchrun's group if needed.

    ``config.batch_size`` (and the task's batches) are GLOBAL; each rank processes 1/world.
    Returns the same TrainResult on every rank (events only on rank 0).
    """
    if config.parallel != "sync":
        raise ValueError(f"parallel={config.parallel!r} is an alternative to DDP, not a mode of it: "
                         "train it with trainer.train in one process")
    _, _, env_device = init_distributed(dist_config.backend)
    device = torch.device(device) if device is not None else env_device
    hooks = DDPHooks(device, dist_config)
    logger.info("rank %d/%d training on %s", hooks.rank, hooks.world_size, device)
    return run_loop(config, task, device=device, on_event=on_event, checkpoint_dir=checkpoint_dir,
                    should_stop=should_stop, hooks=hooks)
