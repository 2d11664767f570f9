"""The "prior" family through the product's EmbeddingTask and trainer (tiny real model, CPU)."""

from __future__ import annotations

import torch

from embeddings.ml.heads import EmbeddingConfig
from embeddings.ml.prior_heads import PriorEmbedding
from training.ml.config import EmbeddingTaskConfig, LoopConfig
from training.ml.embedding_task import EmbeddingTask, synthetic_embedding_data
from training.ml.trainer import train

C = 20
CFG = EmbeddingConfig(family="prior", dim=16, text_dim=16, image_dim=32, num_classes=C, hidden=32, dropout=0.0)


def _make(cfg: EmbeddingConfig) -> PriorEmbedding:
    g = torch.Generator().manual_seed(3)
    return PriorEmbedding(cfg, class_vecs=torch.randn(C, 16, generator=g), fc_weight=torch.randn(C, 32, generator=g),
                          fc_bias=torch.zeros(C))


def _task(task_cfg: EmbeddingTaskConfig, cfg: EmbeddingConfig = CFG) -> EmbeddingTask:
    return EmbeddingTask(cfg, task_cfg, batch_size=16, train=synthetic_embedding_data(64, seed=0),
                         dev=synthetic_embedding_data(24, seed=1), seed=0, make_model=_make,
                         extra_dev={"ood": synthetic_embedding_data(12, seed=2, captions=1)})


def test_training_the_prior_model_lowers_every_loss_part() -> None:
    task = _task(EmbeddingTaskConfig(class_caption_weight=0.5, residual_l2=0.1, caption_dropout=0.0))
    batch = next(iter(task.batches(0, torch.Generator().manual_seed(0))))
    with torch.no_grad():
        before = {k: float(v) for k, v in task.loss(task.model, batch).items() if k.endswith("_loss")}
    assert set(before) == {"contrastive_loss", "class_caption_loss", "residual_loss"}
    assert before["residual_loss"] == 0.0  # the residual starts at zero: the model is ConSE
    train(LoopConfig(epochs=8, lr=3e-3, warmup_steps=5, patience=0, early_stop_metric="both_rsum"), task, device="cpu")
    task.model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        after = {k: float(v) for k, v in task.loss(task.model, batch).items() if k.endswith("_loss")}
    assert after["contrastive_loss"] < before["contrastive_loss"]
    total_after = after["contrastive_loss"] + after["class_caption_loss"]
    assert total_after < before["contrastive_loss"] + before["class_caption_loss"]


def test_evaluate_scores_dev_and_each_extra_set_and_their_sum() -> None:
    task = _task(EmbeddingTaskConfig())
    metrics = task.evaluate(task.model)
    assert {"t2i_r1", "ood_t2i_r1", "ood_i2t_r10", "both_rsum"} <= set(metrics)
    assert abs(metrics["both_rsum"] - metrics["rsum"] - metrics["ood_rsum"]) < 1e-9


def test_prior_family_without_a_model_factory_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="make_model"):
        EmbeddingTask(CFG, EmbeddingTaskConfig(), batch_size=16, train=synthetic_embedding_data(32),
                      dev=synthetic_embedding_data(8, seed=1))
