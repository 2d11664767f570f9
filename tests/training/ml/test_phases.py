"""Tests for training/ml/phases.py through the real loop (training/ml/trainer.py): a task's extra
phase runs after the main epochs, from the best weights, with its own lr, and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from training.ml.phases import Phase, run_phases
from training.ml.trainer import train
from tests.training.ml.test_trainer import TinyTask, _cfg, _weights


class TwoPhaseTask(TinyTask):
    """TinyTask whose second phase ("fine") logs which phase each step ran in."""

    main_phase = "coarse"

    def __init__(self, *args, fine_epochs: int = 2, fine_lr: float = 1e-3, **kw) -> None:
        super().__init__(*args, **kw)
        self.fine_epochs, self.fine_lr = fine_epochs, fine_lr
        self.phase = "coarse"
        self.begun: list[str] = []

    def extra_phases(self) -> list[Phase]:
        return [Phase(name="fine", epochs=self.fine_epochs, lr=self.fine_lr)]

    def begin_phase(self, name: str) -> None:
        self.phase = name
        self.begun.append(name)

    def loss(self, model, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        parts = super().loss(model, batch)
        parts["fine"] = torch.tensor(1.0 if self.phase == "fine" else 0.0)
        return parts


def test_extra_phase_runs_after_the_main_epochs_with_its_own_constant_lr() -> None:
    task = TwoPhaseTask(fine_epochs=2, fine_lr=1e-3)
    events: list[tuple[str, dict]] = []
    res = train(_cfg(epochs=3), task, device="cpu", on_event=lambda n, p: events.append((n, p)))
    assert res.status == "completed" and res.epochs == 5 and res.steps == 5 * 8
    assert task.begun == ["coarse", "fine"]
    start = next(p for n, p in events if n == "start")
    assert start["epochs"] == 5 and start["total_steps"] == 40 and [p["name"] for p in start["phases"]] == [
        "coarse", "fine"]
    phase = next(p for n, p in events if n == "phase")
    assert phase == {"phase": "fine", "epoch": 3, "step": 24, "epochs": 2}
    steps = [p for n, p in events if n == "step"]
    assert [s["phase"] for s in steps] == ["coarse"] * 24 + ["fine"] * 16
    assert all(s["losses"]["fine"] == (1.0 if s["phase"] == "fine" else 0.0) for s in steps)
    assert {s["lr"] for s in steps[24:]} == {1e-3}  # constant: min_lr_ratio 1, no warm-up
    assert [h["phase"] for h in res.history] == ["coarse"] * 3 + ["fine"] * 2


def test_an_early_stopped_phase_hands_over_from_its_best_weights() -> None:
    # dev scores: coarse 1, 3, 2, 2 -> early stop after epoch 4 (patience 2), best epoch 2
    task = TwoPhaseTask(scripted_dev=[1.0, 3.0, 2.0, 2.0, 5.0, 4.0], fine_epochs=2)
    snapshots: dict[int, dict[str, Tensor]] = {}
    at_phase: dict[str, Tensor] = {}

    def on_event(name: str, payload: dict) -> None:
        if name == "epoch":
            snapshots[payload["epoch"]] = _weights(task.model)
        if name == "phase":
            at_phase.update(_weights(task.model))

    res = train(_cfg(epochs=6, early_stop_metric="score", patience=2), task, device="cpu", on_event=on_event)
    for k, v in at_phase.items():  # the fine phase started from epoch 2's weights, not epoch 4's
        assert torch.equal(v, snapshots[2][k]), k
    assert res.epochs == 6 and res.best_epoch == 5 and res.best_metric == 5.0 and res.status == "completed"
    for k, v in _weights(task.model).items():
        assert torch.equal(v, snapshots[5][k])


def test_a_phase_that_never_improves_leaves_the_earlier_best() -> None:
    task = TwoPhaseTask(scripted_dev=[1.0, 3.0, 2.0, 2.0], fine_epochs=2)
    res = train(_cfg(epochs=2, early_stop_metric="score"), task, device="cpu")
    assert res.best_epoch == 2 and res.best_metric == 3.0 and res.epochs == 4


def test_resume_inside_the_extra_phase_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _cfg(epochs=2, restore_best=False)
    full = TwoPhaseTask(fine_epochs=2)
    ref = train(cfg, full, device="cpu", checkpoint_dir=tmp_path / "a")
    calls = {"n": 0}

    def stop_in_epoch_4() -> bool:  # 8 steps per epoch: step 28 is inside epoch 4 (phase "fine")
        calls["n"] += 1
        return calls["n"] > 28

    first = train(cfg, TwoPhaseTask(fine_epochs=2), device="cpu", checkpoint_dir=tmp_path / "b",
                  should_stop=stop_in_epoch_4)
    assert first.status == "cancelled" and first.epochs == 3
    again = TwoPhaseTask(init_seed=99, fine_epochs=2)
    res = train(cfg, again, device="cpu", checkpoint_dir=tmp_path / "b")
    assert res.resumed_from_epoch == 3 and res.epochs == 4 and again.begun == ["fine"] and res.steps == ref.steps
    assert [h["dev"] for h in res.history] == [h["dev"] for h in ref.history]
    for k, v in _weights(full.model).items():
        assert torch.equal(v, _weights(again.model)[k]), k


def test_extra_phases_are_refused_outside_one_synchronous_process() -> None:
    with pytest.raises(ValueError, match="fine"):
        train(_cfg(epochs=1, parallel="hogwild", workers=2), TwoPhaseTask(), device="cpu")


def test_phases_with_no_epochs_are_left_out() -> None:
    assert [p.name for p in run_phases(_cfg(epochs=3), TwoPhaseTask(fine_epochs=0))] == ["coarse"]
    assert [p.name for p in run_phases(_cfg(epochs=3), TinyTask())] == ["train"]
    with pytest.raises(ValueError):
        Phase(name="x", epochs=1, lr=0.0)
