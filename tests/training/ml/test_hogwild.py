"""Tests for training/ml/hogwild.py and the Adagrad option, on a tiny real embedding model (CPU)."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import torch.multiprocessing as mp

from embeddings.ml.heads import EmbeddingConfig
from training.ml.config import EmbeddingTaskConfig, LoopConfig, TrainConfig
from training.ml.embedding_task import EmbeddingTask, synthetic_embedding_data
from training.ml.hogwild import HogwildHooks, _Share, share_optimizer_state
from training.ml.trainer import _build_optimizer, train

MODEL = EmbeddingConfig(dim=16, hidden=32, image_dim=32, text_dim=16, dropout=0.0)
LOOP = LoopConfig(epochs=3, batch_size=16, lr=3e-3, warmup_steps=2, early_stop_metric=None, grad_clip=1.0,
                  parallel="hogwild", workers=2, log_every_steps=1)


def _task(seed: int = 0) -> EmbeddingTask:
    return EmbeddingTask(MODEL, EmbeddingTaskConfig(), batch_size=16, train=synthetic_embedding_data(64, seed=0),
                         dev=synthetic_embedding_data(24, seed=1), seed=seed)


def _first_batch_loss(task: EmbeddingTask) -> float:
    batch = next(iter(task.batches(0, torch.Generator().manual_seed(123))))
    task.model.eval()
    with torch.no_grad():
        parts = task.loss(task.model, batch)
    return float(sum(v for k, v in parts.items() if k.endswith("_loss")))


def test_a_two_process_hogwild_run_lowers_the_loss_and_reports_both_processes_work() -> None:
    task = _task()
    before = _first_batch_loss(task)
    events: list[tuple[str, dict]] = []
    result = train(LOOP, task, device="cpu", on_event=lambda name, payload: events.append((name, payload)))
    after = _first_batch_loss(task)
    assert result.status == "completed" and result.epochs == 3
    # Every batch of every epoch was stepped, by one process or the other.
    assert result.steps == 3 * task.num_batches()
    assert after < 0.8 * before, (before, after)
    assert [h["train"]["contrastive_loss"] for h in result.history][-1] < result.history[0]["train"]["contrastive_loss"]
    assert any(name == "step" for name, _ in events) and events[-1][0] == "done"


def test_the_processes_step_the_parents_shared_parameters() -> None:
    """A change a child writes must be visible in the parent (same storage, not a copy)."""
    task = _task()
    hooks = HogwildHooks(2, "cpu")
    optimizer = _build_optimizer(task.model, LOOP)
    hooks.setup(task.model, optimizer)
    params = list(task.model.parameters())
    t = max(range(len(params)), key=lambda i: params[i].numel())  # a weight matrix
    target = params[t]
    assert all(p.is_shared() for p in params)
    assert all(t.is_shared() for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t))
    before = [p.detach().clone() for p in params]
    ptrs = [p.data_ptr() for p in params]
    ctx = mp.get_context("fork")
    seen = ctx.Queue()

    def child(k: int) -> None:
        with torch.no_grad():
            target.view(-1)[k] += 1000.0  # each child writes its own coordinate
        seen.put((k, os.getpid(), [p.data_ptr() for p in params]))

    procs = [ctx.Process(target=child, args=(k,)) for k in range(2)]
    for p in procs:
        p.start()
    reports = [seen.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len({pid for _, pid, _ in reports}) == 2 and os.getpid() not in {pid for _, pid, _ in reports}
    assert all(r == ptrs for _, _, r in reports)  # the same storage addresses in every process
    flat, orig = target.detach().view(-1), before[t].view(-1)
    assert flat[0] == orig[0] + 1000.0 and flat[1] == orig[1] + 1000.0  # both children's writes arrived
    assert torch.equal(flat[2:], orig[2:])


def test_a_hogwild_epoch_updates_the_parents_model_and_optimizer_state() -> None:
    task = _task()
    before = [p.detach().clone() for p in task.model.parameters()]
    config = dataclasses.replace(LOOP, epochs=1, optimizer="adagrad", lr=0.05)
    train(config, task, device="cpu")
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, task.model.parameters()))


def test_each_process_takes_a_disjoint_share_of_the_same_epoch() -> None:
    task = _task()
    ids = [b["image_id"] for b in task.batches(0, torch.Generator().manual_seed(7))]
    shares = [[b["image_id"] for b in _Share(task, k, 2).batches(0, torch.Generator().manual_seed(7))]
              for k in range(2)]
    assert [torch.equal(a, b) for a, b in zip(ids[0::2], shares[0])] == [True] * len(shares[0])
    assert [torch.equal(a, b) for a, b in zip(ids[1::2], shares[1])] == [True] * len(shares[1])
    assert len(shares[0]) + len(shares[1]) == task.num_batches()
    assert _Share(task, 0, 2).num_batches() + _Share(task, 1, 2).num_batches() == task.num_batches()


def test_adamw_state_is_made_before_forking_and_shared() -> None:
    task = _task()
    optimizer = _build_optimizer(task.model, dataclasses.replace(LOOP, optimizer="adamw"))
    assert not optimizer.state
    share_optimizer_state(optimizer)
    states = [optimizer.state[p] for p in task.model.parameters()]
    assert all({"step", "exp_avg", "exp_avg_sq"} <= set(s) for s in states)
    assert all(s["exp_avg"].is_shared() for s in states)


def test_hogwild_refuses_a_gpu_device_and_bad_configs() -> None:
    with pytest.raises(ValueError, match="CPU"):
        HogwildHooks(2, "cuda")
    with pytest.raises(ValueError):
        LoopConfig(workers=0)
    with pytest.raises(ValueError, match="parallel"):
        TrainConfig.from_dict({"loop": {"parallel": "async"}})


def test_adagrad_is_built_and_recorded_in_the_config_round_trip() -> None:
    task = _task()
    config = TrainConfig.from_dict({"loop": {"optimizer": "adagrad", "lr": 0.05, "parallel": "hogwild",
                                             "workers": 3}})
    assert isinstance(_build_optimizer(task.model, config.loop), torch.optim.Adagrad)
    assert isinstance(_build_optimizer(task.model, LoopConfig()), torch.optim.AdamW)
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config
    assert again.to_dict()["loop"]["optimizer"] == "adagrad" and again.loop.workers == 3
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig.from_dict({"loop": {"optimizer": "sgd"}})


def test_cancelling_a_hogwild_run_stops_its_processes() -> None:
    task = _task()
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    result = train(dataclasses.replace(LOOP, epochs=50), task, device="cpu", should_stop=should_stop)
    assert result.status == "cancelled" and result.epochs == 0
