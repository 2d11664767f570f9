"""Tests for training/ml/trainer.py with a tiny regression task on CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from collections.abc import Iterable

import pytest
import torch
from torch import Tensor, nn

from embeddings.ml.checkpoint import IncompatibleCheckpoint
from training.ml.config import LoopConfig
from training.ml.trainer import STATE_FILE, TrainTask, lr_factor, train


class TinyTask:
    """y = X w* + noise; a 2-layer net with dropout (so resume must restore the RNG)."""

    def __init__(self, init_seed: int = 0, n: int = 64, batch: int = 8, scripted_dev: list[float] | None = None):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
        self.dev_x = torch.randn(32, 4, generator=g)
        self.dev_y = self.dev_x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        torch.manual_seed(init_seed)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.batch = batch
        self.scripted_dev = scripted_dev
        self.evals = 0

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[dict[str, Tensor]]:
        order = torch.randperm(len(self.x), generator=generator)
        for i in range(0, len(order), self.batch):
            idx = order[i : i + self.batch]
            yield {"x": self.x[idx], "y": self.y[idx]}

    def num_batches(self) -> int:
        return (len(self.x) + self.batch - 1) // self.batch

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pred = model(batch["x"]).squeeze(-1)
        return {"mse_loss": ((pred - batch["y"]) ** 2).mean(), "mae": (pred - batch["y"]).abs().mean()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.evals += 1
        mse = float(((model(self.dev_x).squeeze(-1) - self.dev_y) ** 2).mean())
        if self.scripted_dev is not None:
            return {"score": self.scripted_dev[self.evals - 1], "mse": mse}
        return {"neg_mse": -mse, "mse": mse}


def _cfg(**kw) -> LoopConfig:
    base = dict(epochs=4, batch_size=8, lr=1e-2, warmup_steps=3, weight_decay=0.01, grad_clip=1.0,
                seed=7, early_stop_metric="neg_mse", patience=0, log_every_steps=1)
    base.update(kw)
    return LoopConfig(**base)


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tiny_task_satisfies_the_protocol() -> None:
    task: TrainTask = TinyTask()
    assert task.num_batches() == 8


def test_loss_goes_down_in_a_few_steps() -> None:
    task = TinyTask()
    events: list[tuple[str, dict]] = []
    result = train(_cfg(epochs=3, lr=5e-2), task, device="cpu", on_event=lambda n, p: events.append((n, p)))
    steps = [p["losses"]["mse_loss"] for n, p in events if n == "step"]
    assert len(steps) == 24 and result.steps == 24 and result.status == "completed"
    assert sum(steps[-4:]) / 4 < 0.25 * sum(steps[:4]) / 4
    names = [n for n, _ in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("epoch") == 3
    step = next(p for n, p in events if n == "step")
    assert {"epoch", "step", "total_steps", "losses", "lr", "samples_per_s"} <= set(step)
    assert "mae" in step["losses"] and step["total_steps"] == 24


def test_same_seed_gives_the_same_weights() -> None:
    a, b = TinyTask(), TinyTask()
    train(_cfg(epochs=2), a, device="cpu")
    train(_cfg(epochs=2), b, device="cpu")
    for k, v in _weights(a.model).items():
        assert torch.equal(v, _weights(b.model)[k])


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    full = TinyTask()
    ref = train(_cfg(restore_best=False), full, device="cpu", checkpoint_dir=tmp_path / "a")

    calls = {"n": 0}

    def stop_in_epoch_3() -> bool:  # 8 steps per epoch: step 20 is inside epoch 3
        calls["n"] += 1
        return calls["n"] > 20

    first = train(_cfg(restore_best=False), TinyTask(), device="cpu", checkpoint_dir=tmp_path / "b",
                  should_stop=stop_in_epoch_3)
    assert first.status == "cancelled" and first.epochs == 2 and first.steps == 20
    again = TinyTask(init_seed=99)  # different init: the weights must come from the checkpoint
    res = train(_cfg(restore_best=False), again, device="cpu", checkpoint_dir=tmp_path / "b")
    assert res.resumed_from_epoch == 2 and res.epochs == 4 and res.steps == ref.steps
    for k, v in _weights(full.model).items():
        assert torch.equal(v, _weights(again.model)[k]), k
    assert [h["dev"] for h in res.history] == [h["dev"] for h in ref.history]


def test_cancel_stops_at_once_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    train(_cfg(epochs=1), TinyTask(), device="cpu", checkpoint_dir=tmp_path)
    saved = (tmp_path / STATE_FILE).read_bytes()
    events: list[str] = []
    res = train(_cfg(epochs=3), TinyTask(), device="cpu", checkpoint_dir=tmp_path / "other",
                should_stop=lambda: True, on_event=lambda n, p: events.append(n))
    assert res.status == "cancelled" and res.steps == 0 and "cancelled" in events
    assert not (tmp_path / "other" / STATE_FILE).exists()
    # A cancelled resume of the finished one-epoch run leaves its checkpoint byte-identical.
    res = train(_cfg(epochs=1), TinyTask(), device="cpu", checkpoint_dir=tmp_path, should_stop=lambda: True)
    assert (tmp_path / STATE_FILE).read_bytes() == saved


def test_early_stopping_restores_the_best_weights() -> None:
    task = TinyTask(scripted_dev=[1.0, 3.0, 2.0, 2.5, 9.0, 9.0])
    snapshots: dict[int, dict[str, Tensor]] = {}

    def on_event(name: str, payload: dict) -> None:
        if name == "epoch":
            snapshots[payload["epoch"]] = _weights(task.model)

    res = train(_cfg(epochs=6, early_stop_metric="score", patience=2), task, device="cpu", on_event=on_event)
    assert res.status == "early_stop" and res.epochs == 4
    assert res.best_epoch == 2 and res.best_metric == 3.0 and res.best_metrics["score"] == 3.0
    for k, v in _weights(task.model).items():
        assert torch.equal(v, snapshots[2][k])
    assert not torch.equal(snapshots[4]["0.weight"], snapshots[2]["0.weight"])


def test_min_mode_and_missing_metric() -> None:
    res = train(_cfg(epochs=2, early_stop_metric="mse", early_stop_mode="min"), TinyTask(), device="cpu")
    assert res.best_metric == min(h["dev"]["mse"] for h in res.history)
    with pytest.raises(KeyError):
        train(_cfg(epochs=1, early_stop_metric="bleu"), TinyTask(), device="cpu")


def test_resume_with_a_changed_loop_config_is_refused(tmp_path: Path) -> None:
    train(_cfg(epochs=1), TinyTask(), device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(IncompatibleCheckpoint, match="lr"):
        train(_cfg(epochs=1, lr=0.5), TinyTask(), device="cpu", checkpoint_dir=tmp_path)
    # cadence fields may change
    train(dataclasses.replace(_cfg(epochs=1), log_every_steps=5), TinyTask(), device="cpu", checkpoint_dir=tmp_path)


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
