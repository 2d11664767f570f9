"""Tests for training/ml/scst.py and the caption task's self-critical phase, on a tiny real decoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from embeddings.ml.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from tests.training.ml.test_caption_task import make_task
from training.ml.caption_task import CaptionTaskConfig
from training.ml.config import LoopConfig, TrainConfig, apply_overrides
from training.ml.scst import sample_captions, scst_loss
from training.ml.trainer import train

torch.set_num_threads(1)


def _loop(epochs: int, **kw) -> LoopConfig:
    base = dict(epochs=epochs, batch_size=8, lr=1e-2, warmup_steps=2, weight_decay=0.0,
                early_stop_metric="cider_d", patience=0, log_every_steps=1)
    base.update(kw)
    return LoopConfig(**base)  # type: ignore[arg-type]


def test_samples_follow_the_decoding_rules_and_carry_their_log_probs() -> None:
    task = make_task("attention")
    model = task.model.eval()  # dropout 0 in the tiny config: the replay below sees the same model
    data = task.train_data
    pooled, spatial = data.pooled[:3, 0], data.spatial[:3, 0]  # type: ignore[index]
    gen = torch.Generator().manual_seed(0)
    drawn = sample_captions(model, pooled, spatial, samples=4, max_len=6, generator=gen)
    assert drawn.tokens.shape[0] == 12 and drawn.tokens.shape[1] <= 6
    rows = drawn.tokens.tolist()
    for row, length in zip(rows, drawn.lengths.tolist()):
        assert EOS_ID in row and row.index(EOS_ID) == length - 1 >= 1  # never empty, always ended
        assert all(t == PAD_ID for t in row[length:])
        assert not {BOS_ID, UNK_ID} & set(row[:length]) and PAD_ID not in row[:length]
    assert drawn.log_probs.requires_grad
    # Replaying the samples with teacher forcing gives the same summed log-probability, once the
    # tokens sampling never generates are masked out of the softmax.
    width = drawn.tokens.shape[1]
    inputs = torch.cat([torch.full((12, 1), BOS_ID), drawn.tokens[:, :-1]], dim=1)
    image_index = torch.arange(3).repeat_interleave(4)
    logits = model(pooled, spatial, inputs, image_index=image_index)["logits"]  # (12, T, V)
    mask = torch.zeros(logits.shape[-1])
    mask[[PAD_ID, BOS_ID, UNK_ID]] = float("-inf")
    bias = mask.repeat(width, 1)
    bias[0, EOS_ID] = float("-inf")
    if width == 6:
        bias[5] = float("-inf")
        bias[5, EOS_ID] = 0.0
    logp = F.log_softmax(logits + bias, dim=-1).gather(2, drawn.tokens.clamp(min=0).unsqueeze(2)).squeeze(2)
    logp = torch.where(drawn.tokens == PAD_ID, torch.zeros_like(logp), logp)
    assert torch.allclose(logp.sum(dim=1), drawn.log_probs, atol=1e-4)


def test_scst_loss_parts_and_baselines() -> None:
    task = make_task("attention", scst_epochs=1, scst_max_len=8)
    task.begin_phase("scst")
    data = task.train_data
    pooled, spatial = data.pooled[:4, 0], data.spatial[:4, 0]  # type: ignore[index]
    cider = task.cider
    assert cider is not None and cider.num_images == data.num_images
    greedy = scst_loss(task.model, pooled, spatial, [0, 1, 2, 3], vocab=task.vocab, cider=cider, samples=3,
                       max_len=8, generator=torch.Generator().manual_seed(0))
    assert set(greedy) == {"scst_loss", "scst_reward", "scst_baseline", "scst_greedy"}
    assert float(greedy["scst_baseline"]) == pytest.approx(float(greedy["scst_greedy"]))
    greedy["scst_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    mean = scst_loss(task.model, pooled, spatial, [0, 1, 2, 3], vocab=task.vocab, cider=cider, samples=3,
                     max_len=8, baseline="mean", generator=torch.Generator().manual_seed(0))
    assert "scst_greedy" not in mean
    # the mean of the leave-one-out baselines is the mean reward itself
    assert float(mean["scst_baseline"]) == pytest.approx(float(mean["scst_reward"]))
    with pytest.raises(ValueError, match="2 samples"):
        scst_loss(task.model, pooled, spatial, [0], vocab=task.vocab, cider=cider, samples=1, max_len=8,
                  baseline="mean")


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_the_self_critical_phase_raises_the_reward_of_greedy_captions(baseline: str) -> None:
    """8 cross-entropy epochs leave the tiny decoder half-trained (dev CIDEr-D of its greedy
    captions ~64 on this data); 8 self-critical epochs must lift it well beyond its best."""
    task = make_task("attention", label_smoothing=0.0, scst_epochs=8, scst_lr=5e-3, scst_samples=5,
                     scst_max_len=10, scst_baseline=baseline)
    events: list[tuple[str, dict]] = []
    res = train(_loop(8), task, device="cpu", on_event=lambda n, p: events.append((n, p)))
    xe = [h for h in res.history if h["phase"] == "xe"]
    scst = [h for h in res.history if h["phase"] == "scst"]
    assert len(xe) == 8 and len(scst) == 8
    best_xe = max(h["dev"]["cider_d"] for h in xe)
    assert res.best_epoch is not None and res.best_epoch > 8  # the best weights come from the scst phase
    assert res.best_metric is not None and res.best_metric > best_xe + 30.0
    # the phase's own progress: a phase event, then steps and epochs that say "scst" with rewards
    names = [n for n, _ in events]
    epoch_at = [i for i, n in enumerate(names) if n == "epoch"]
    assert names.count("phase") == 1 and epoch_at[7] < names.index("phase") < epoch_at[8]
    steps = [p for n, p in events if n == "step" and p["phase"] == "scst"]
    assert len(steps) == 8 * task.num_batches()
    assert all({"scst_loss", "scst_reward", "scst_baseline"} <= set(s["losses"]) for s in steps)
    assert all("scst_reward" in h["train"] and "caption_loss" not in h["train"] for h in scst)


def test_no_scst_epochs_leaves_the_run_as_it_was() -> None:
    """scst_epochs=0 is exactly the cross-entropy run: same events (no phase), weights, history."""
    plain, zero = make_task("show_tell"), make_task("show_tell", scst_epochs=0, scst_lr=1.0)
    plain.extra_phases = lambda: []  # type: ignore[method-assign]  # a task with no extra phase at all
    ev_a: list[str] = []
    ev_b: list[str] = []
    a = train(_loop(3), plain, device="cpu", on_event=lambda n, p: ev_a.append(n))
    b = train(_loop(3), zero, device="cpu", on_event=lambda n, p: ev_b.append(n))
    assert ev_a == ev_b and "phase" not in ev_b and zero.cider is None
    assert [h["dev"] for h in a.history] == [h["dev"] for h in b.history]
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, zero.model.state_dict()[k])


def test_scst_settings_round_trip_through_the_train_config() -> None:
    base = TrainConfig.default("captioner")
    cfg = apply_overrides(base, ["task.scst_epochs=3", "scst_lr=2e-5", "scst_samples=4", "scst_max_len=14",
                                 "scst_baseline=mean"])
    assert (cfg.task.scst_epochs, cfg.task.scst_lr, cfg.task.scst_samples, cfg.task.scst_max_len,
            cfg.task.scst_baseline) == (3, 2e-5, 4, 14, "mean")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["task"]["scst_epochs"] == 3
    for bad in (["scst_samples=0"], ["scst_baseline=beam"], ["scst_baseline=mean", "scst_samples=1"],
                ["scst_epochs=-1"]):
        with pytest.raises(ValueError):
            TrainConfig.from_dict(apply_overrides(base, bad).to_dict())
    with pytest.raises(ValueError, match="max_len"):
        make_task("attention", scst_epochs=1, scst_max_len=11)  # the tiny model's max_len is 10
    assert dataclasses.asdict(CaptionTaskConfig())["scst_epochs"] == 0
