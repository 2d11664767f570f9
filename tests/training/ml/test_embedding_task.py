"""Tests for training/ml/embedding_task.py on small synthetic features."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from embeddings.ml.heads import EmbeddingConfig
from training.ml.config import EmbeddingTaskConfig, LoopConfig
from training.ml.embedding_task import EmbeddingData, EmbeddingTask, encode_split, synthetic_embedding_data
from training.ml.trainer import train

MODEL = EmbeddingConfig(dim=16, hidden=32, image_dim=32, text_dim=16, dropout=0.0, spatial_cells=4, attn_hidden=8)


def _task(task_cfg: EmbeddingTaskConfig | None = None, model: EmbeddingConfig = MODEL, spatial: int = 0,
          batch_size: int = 16) -> EmbeddingTask:
    train_data = synthetic_embedding_data(64, spatial_cells=spatial, seed=0)
    dev = synthetic_embedding_data(24, spatial_cells=spatial, seed=1)
    return EmbeddingTask(model, task_cfg or EmbeddingTaskConfig(), batch_size=batch_size,
                         train=train_data, dev=dev, seed=0)


def test_batches_group_several_captions_of_each_image() -> None:
    task = _task(EmbeddingTaskConfig(captions_per_image=2, caption_dropout=0.0))
    batches = list(task.batches(0, torch.Generator().manual_seed(0)))
    assert len(batches) == task.num_batches() == (64 * 3) // 16
    b = batches[0]
    assert b["image"].shape == (16, 32) and b["text"].shape == (32, 16)
    assert torch.equal(b["text_image_id"], b["image_id"].repeat_interleave(2))
    # Every caption is seen at least once per epoch when nothing is dropped.
    seen = torch.cat([x["text"] for x in batches])
    assert len(torch.unique(seen, dim=0)) == 64 * 5 - 0  # (64*3 groups * 2) covers all 5 captions


def test_caption_dropout_leaves_captions_out_but_no_image_without_one() -> None:
    task = _task(EmbeddingTaskConfig(captions_per_image=1, caption_dropout=0.6))
    batches = list(task.batches(0, torch.Generator().manual_seed(1)))
    seen = torch.unique(torch.cat([x["text"] for x in batches]), dim=0)
    assert len(seen) < 0.7 * 64 * 5
    assert set(torch.cat([x["image_id"] for x in batches]).tolist()) == set(range(64))


def test_views_are_sampled_only_when_augmenting() -> None:
    data = synthetic_embedding_data(32, views=3, seed=0)
    for augment, expect_many in ((True, True), (False, False)):
        task = EmbeddingTask(MODEL, EmbeddingTaskConfig(augment_views=augment), batch_size=8, train=data, dev=data)
        used = set()
        for b in task.batches(0, torch.Generator().manual_seed(0)):
            for img, feat in zip(b["image_id"], b["image"]):
                used.add(next(v for v in range(3) if torch.equal(data.image_feats[img, v], feat)))
        assert (len(used) > 1) == expect_many


def test_same_generator_gives_the_same_batches() -> None:
    task = _task()
    a = list(task.batches(0, torch.Generator().manual_seed(5)))
    b = list(task.batches(0, torch.Generator().manual_seed(5)))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


@pytest.mark.parametrize("loss", ["info_nce", "hinge", "both"])
def test_loss_parts_are_named(loss: str) -> None:
    task = _task(EmbeddingTaskConfig(loss=loss))
    parts = task.loss(task.model, next(iter(task.batches(0, torch.Generator().manual_seed(0)))))
    losses = {k for k in parts if k.endswith("_loss")}
    assert losses == {"info_nce": {"contrastive_loss"}, "hinge": {"hinge_loss"},
                      "both": {"contrastive_loss", "hinge_loss"}}[loss]


@pytest.mark.parametrize("image_input", ["pooled", "spatial"])
def test_training_improves_dev_retrieval(image_input: str) -> None:
    spatial = 4 if image_input == "spatial" else 0
    task = _task(model=dataclasses.replace(MODEL, image_input=image_input), spatial=spatial)
    before = task.evaluate(task.model)
    res = train(LoopConfig(epochs=8, lr=3e-3, warmup_steps=5, patience=0, seed=0), task, device="cpu")
    after = task.evaluate(task.model)
    assert after["rsum"] > before["rsum"] + 50 and res.best_metric == pytest.approx(after["rsum"])
    assert {"i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr"} <= set(after)


def test_encode_split_returns_unit_vectors_for_every_item() -> None:
    task = _task()
    img, txt = encode_split(task.model, task.dev_data, batch_size=7)
    assert img.shape == (24, 16) and txt.shape == (120, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(24), atol=1e-5)


def test_data_validation() -> None:
    with pytest.raises(ValueError):
        EmbeddingData(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one caption"):
        EmbeddingData(torch.zeros(2, 1, 3), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
