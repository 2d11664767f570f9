"""Tests for training/ml/distributed.py: 2 CPU gloo ranks vs one process on the global batch."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from embeddings.ml.heads import EmbeddingConfig
from training.ml.config import EmbeddingTaskConfig, LoopConfig
from training.ml.distributed import DistConfig, train_distributed
from training.ml.embedding_task import EmbeddingTask, synthetic_embedding_data
from training.ml.trainer import train

MODEL = EmbeddingConfig(dim=16, hidden=32, image_dim=32, text_dim=16, dropout=0.0)
LOOP = LoopConfig(epochs=2, batch_size=16, lr=3e-3, warmup_steps=2, seed=3, patience=0, restore_best=False)


def _task() -> EmbeddingTask:
    return EmbeddingTask(MODEL, EmbeddingTaskConfig(captions_per_image=2, caption_dropout=0.2),
                         batch_size=LOOP.batch_size, train=synthetic_embedding_data(48, seed=0),
                         dev=synthetic_embedding_data(16, seed=1), seed=LOOP.seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for name, cfg in (("ddp", DistConfig()), ("localsgd", DistConfig(average_every=2, local_sgd_warmup=3))):
            task = _task()
            events: list[str] = []
            res = train_distributed(LOOP, task, device="cpu", dist_config=cfg,
                                    on_event=lambda n, p, events=events: events.append(n),
                                    checkpoint_dir=Path(out_dir) / name)
            state = {k: v.contiguous() for k, v in task.model.state_dict().items()}
            save_file(state, str(Path(out_dir) / f"{name}_rank{rank}.safetensors"))
            (Path(out_dir) / f"{name}_rank{rank}.txt").write_text(f"{res.best_metric} {len(events)} {res.steps}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_single_process_training_on_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    single = _task()
    ref = train(LOOP, single, device="cpu")
    ref_state = single.model.state_dict()
    rank0 = load_file(str(tmp_path / "ddp_rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "ddp_rank1.safetensors"))
    for k, v in ref_state.items():
        assert torch.equal(rank0[k], rank1[k]), k  # ranks agree exactly
        assert torch.allclose(rank0[k], v, rtol=1e-4, atol=1e-5), (k, (rank0[k] - v).abs().max())
    best0, n_events0, steps0 = (tmp_path / "ddp_rank0.txt").read_text().split()
    best1, n_events1, _ = (tmp_path / "ddp_rank1.txt").read_text().split()
    assert float(best0) == float(best1) == pytest.approx(ref.best_metric, abs=1e-6)
    assert int(n_events0) > 0 and int(n_events1) == 0  # only rank 0 reports
    assert int(steps0) == ref.steps
    assert (tmp_path / "ddp" / "last.json").exists()
    # Post-local SGD: ranks end with identical (averaged) weights and a model that learned.
    l0 = load_file(str(tmp_path / "localsgd_rank0.safetensors"))
    l1 = load_file(str(tmp_path / "localsgd_rank1.safetensors"))
    assert all(torch.allclose(l0[k], l1[k], atol=1e-6) for k in l0)
    assert float((tmp_path / "localsgd_rank0.txt").read_text().split()[0]) > 200
