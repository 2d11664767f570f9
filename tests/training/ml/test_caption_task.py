"""Tests for training/ml/caption_task.py: batching, loss, dev scoring and a tiny real training run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from embeddings.ml.captioner import CaptionerConfig
from embeddings.ml.vocab import BOS_ID, EOS_ID, PAD_ID
from training.ml.caption_task import (
    CaptionData,
    CaptionTask,
    CaptionTaskConfig,
    _caption_rows,
    average_weights,
    decode_split,
    default_caption_train_config,
)
from training.ml.config import LoopConfig, TrainConfig
from training.ml.trainer import train

torch.set_num_threads(1)

SENTENCES = [
    ["a dog runs on the grass", "a brown dog running on grass"],
    ["two men play soccer", "two men are playing soccer in a field"],
    ["a girl in a pink dress", "a little girl wearing a pink dress"],
    ["a boat on the water", "a small boat sails on blue water"],
]


def synthetic_data(n_images: int, *, seed: int, views: int = 2, cells: int = 4, dim: int = 16) -> CaptionData:
    """Images of 4 classes (prototype + noise); captions are the class's sentences."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(4, cells, dim, generator=torch.Generator().manual_seed(99)) * 2
    cls = torch.arange(n_images) % 4
    spatial = protos[cls].unsqueeze(1) + 0.1 * torch.rand(n_images, views, cells, dim, generator=g)  # (N, V, C, F)
    return CaptionData(pooled=spatial.mean(dim=2), spatial=spatial,
                       captions=[SENTENCES[int(c)] for c in cls], keys=[f"img{seed}_{i}" for i in range(n_images)])


def model_config(kind: str = "attention") -> CaptionerConfig:
    return CaptionerConfig(decoder=kind, feature_dim=16, num_cells=4, embed_dim=16, hidden_dim=32,
                           context_dim=16, attention_dim=16, dropout=0.0, max_len=10)


def make_task(kind: str = "attention", **task_kw: object) -> CaptionTask:
    cfg = CaptionTaskConfig(vocab_min_count=1, **task_kw)  # type: ignore[arg-type]
    return CaptionTask(model_config(kind), cfg, batch_size=8, train=synthetic_data(24, seed=0),
                       dev=synthetic_data(8, seed=1), seed=0)


def test_vocabulary_comes_from_training_captions_and_sets_vocab_size() -> None:
    task = make_task()
    assert "soccer" in task.vocab and "dog" in task.vocab
    assert task.model_config.vocab_size == len(task.vocab)
    assert task.model.config.vocab_size == len(task.vocab)


def _class_of(pooled_row: torch.Tensor) -> int:
    protos = (torch.rand(4, 4, 16, generator=torch.Generator().manual_seed(99)) * 2).mean(dim=1)  # (4, F)
    return int(((protos - pooled_row) ** 2).sum(dim=1).argmin())


def test_batches_hold_all_captions_of_their_images() -> None:
    task = make_task()
    batches = list(task.batches(0, torch.Generator().manual_seed(0)))
    assert len(batches) == task.num_batches() == 24 // 4  # batch_size 8 captions = 4 images x 2
    decoded = []
    for b in batches:
        assert b["pooled"].shape == (4, 16) and b["spatial"].shape == (4, 4, 16)
        assert b["tokens"].shape[:2] == (4, 2) and b["lengths"].shape == (4, 2)
        assert bool((b["tokens"][:, :, 0] == BOS_ID).all())
        assert b["lengths"].tolist() == ((b["tokens"] != PAD_ID).sum(dim=2) - 1).tolist()
        assert int(b["lengths"].max()) + 1 == b["tokens"].shape[2]  # no all-padding columns
        for img in range(4):
            for row in b["tokens"][img]:
                text = task.vocab.decode(row.tolist())
                assert text in SENTENCES[_class_of(b["pooled"][img])]  # captions sit with their image
                decoded.append(text)
    assert sorted(decoded) == sorted(s for i in range(24) for s in SENTENCES[i % 4])


def test_caption_rows_sort_by_length_and_drop_missing_captions() -> None:
    tokens = torch.arange(2 * 3 * 4).view(2, 3, 4)  # (I=2, K=3, L+1=4)
    lengths = torch.tensor([[2, 3, 0], [3, 1, 2]])
    rows, image_index, lens = _caption_rows(tokens, lengths)
    assert lens.tolist() == [3, 3, 2, 2, 1]
    assert image_index.tolist() == [0, 1, 0, 1, 1]  # ties keep image-major order
    assert rows.tolist() == [tokens[0, 1].tolist(), tokens[1, 0].tolist(), tokens[0, 0].tolist(),
                             tokens[1, 2].tolist(), tokens[1, 1].tolist()]


def test_drop_last_skips_the_smaller_final_batch() -> None:
    cfg = CaptionTaskConfig(vocab_min_count=1, drop_last=True)
    task = CaptionTask(model_config(), cfg, batch_size=10, train=synthetic_data(24, seed=0),
                       dev=synthetic_data(8, seed=1))
    batches = list(task.batches(0, torch.Generator().manual_seed(0)))
    assert len(batches) == task.num_batches() == 4  # 24 images, 5 per batch
    assert all(b["pooled"].shape[0] == 5 for b in batches)
    keep_all = CaptionTask(model_config(), CaptionTaskConfig(vocab_min_count=1), batch_size=10,
                           train=synthetic_data(24, seed=0), dev=synthetic_data(8, seed=1))
    assert keep_all.num_batches() == 5


def test_batches_are_reproducible_from_the_generator() -> None:
    task = make_task()
    one = [b["tokens"] for b in task.batches(0, torch.Generator().manual_seed(5))]
    two = [b["tokens"] for b in task.batches(0, torch.Generator().manual_seed(5))]
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_long_captions_are_truncated_but_keep_eos() -> None:
    data = synthetic_data(4, seed=0)
    data = dataclasses.replace(data, captions=[[" ".join(["dog"] * 30)]] * 4)
    task = CaptionTask(model_config(), CaptionTaskConfig(vocab_min_count=1), batch_size=2, train=data, dev=data)
    batch = next(iter(task.batches(0, torch.Generator().manual_seed(0))))
    assert batch["tokens"].shape[2] == 11  # <bos> + max_len (10) tokens
    assert bool((batch["tokens"][:, :, -1] == EOS_ID).all())
    assert int((batch["tokens"] == EOS_ID).sum()) == batch["tokens"].shape[0]


def test_loss_returns_named_parts() -> None:
    task = make_task()
    batch = next(iter(task.batches(0, torch.Generator().manual_seed(0))))
    parts = task.loss(task.model, batch)
    assert set(parts) == {"caption_loss", "attention_loss"}
    assert all(torch.isfinite(v) for v in parts.values())
    plain = make_task("show_tell", attention_weight=0.0)
    batch = next(iter(plain.batches(0, torch.Generator().manual_seed(0))))
    assert "spatial" not in batch
    assert set(plain.loss(plain.model, batch)) == {"caption_loss"}


def test_scheduled_sampling_ramps_linearly() -> None:
    cfg = CaptionTaskConfig(vocab_min_count=1, scheduled_sampling_max=0.25)
    task = CaptionTask(model_config(), cfg, batch_size=8, train=synthetic_data(24, seed=0),
                       dev=synthetic_data(8, seed=1), epochs=6)
    assert [task.sampling_prob(e) for e in range(6)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert make_task().sampling_prob(3) == 0.0


def test_captioner_kind_is_registered_with_train_config() -> None:
    config = TrainConfig.default("captioner")
    assert isinstance(config.model, CaptionerConfig) and isinstance(config.task, CaptionTaskConfig)
    assert TrainConfig.from_dict(config.to_dict()) == config
    tuned = default_caption_train_config()
    assert tuned.loop.early_stop_metric == "cider_d" and tuned.kind == "captioner"
    assert TrainConfig.from_dict(tuned.to_dict()) == tuned


@pytest.mark.parametrize("kind", ["show_tell", "attention"])
def test_training_with_the_real_loop_learns_the_captions(kind: str) -> None:
    task = make_task(kind, keep_snapshots=True, label_smoothing=0.0)
    before = task.evaluate(task.model)
    task.snapshots.clear()
    loop = LoopConfig(epochs=30, batch_size=8, lr=1e-2, warmup_steps=5, weight_decay=0.0,
                      early_stop_metric="cider_d", patience=0, log_every_steps=100)
    result = train(loop, task, device="cpu")
    after = result.best_metrics
    assert after["cider_d"] > before["cider_d"] + 100.0
    assert after["bleu_4"] > 90.0
    # Each dev image is captioned with one of its class's sentences.
    hyps = decode_split(task.model, task.dev_data, task.vocab, beam_size=1)
    for key, caps in zip(task.dev_data.keys, task.dev_data.captions):
        assert hyps[key] in caps
    assert task.last_hypotheses  # evaluate() keeps the dev captions it scored
    assert len(task.snapshots) == 30


def test_average_weights_is_the_elementwise_mean() -> None:
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor([2])}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor([4])}
    avg = average_weights([a, b])
    torch.testing.assert_close(avg["w"], torch.tensor([2.0, 4.0]))
    assert avg["n"].dtype == torch.long and int(avg["n"]) == 3
    with pytest.raises(ValueError):
        average_weights([])
