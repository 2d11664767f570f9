"""Tests for embeddings/ml/heads.py: config strictness, shapes, normalisation, spatial paths."""

from __future__ import annotations

import pytest
import torch

from embeddings.ml.checkpoint import checkpoint_to_dict, load_checkpoint, save_checkpoint
from embeddings.ml.heads import EmbeddingConfig, JointEmbedding, embedding_from_state

SMALL = dict(dim=16, hidden=32, image_dim=24, text_dim=12, spatial_cells=4, attn_hidden=8)


def test_config_from_dict_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown"):
        EmbeddingConfig.from_dict({"dim": 64, "dimm": 3})
    with pytest.raises(ValueError):
        EmbeddingConfig.from_dict({"head": "transformer"})
    with pytest.raises(ValueError):
        EmbeddingConfig.from_dict({"dim": "64"})
    with pytest.raises(ValueError):
        EmbeddingConfig(dropout=1.5)
    cfg = EmbeddingConfig(**SMALL)
    assert EmbeddingConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("head", ["linear", "mlp"])
@pytest.mark.parametrize("image_input", ["pooled", "spatial"])
def test_outputs_are_unit_vectors_of_the_joint_width(head: str, image_input: str) -> None:
    torch.manual_seed(0)
    model = JointEmbedding(EmbeddingConfig(head=head, image_input=image_input, **SMALL)).eval()
    img = torch.randn(3, 4, 24) if image_input == "spatial" else torch.randn(3, 24)
    out = model(img, torch.randn(5, 12))
    assert out["image_emb"].shape == (3, 16) and out["text_emb"].shape == (5, 16)
    assert torch.allclose(out["image_emb"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["text_emb"].norm(dim=-1), torch.ones(5), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_logit_scale_is_clamped() -> None:
    model = JointEmbedding(EmbeddingConfig(**SMALL))
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale().item() == pytest.approx(100.0)


def test_pooled_model_given_spatial_cells_uses_their_mean() -> None:
    torch.manual_seed(1)
    model = JointEmbedding(EmbeddingConfig(**SMALL)).eval()
    cells = torch.randn(2, 4, 24)
    assert torch.allclose(model.encode_image(cells), model.encode_image(cells.mean(1)), atol=1e-6)


def test_attention_pool_starts_as_the_plain_mean_and_learns_to_move() -> None:
    torch.manual_seed(2)
    model = JointEmbedding(EmbeddingConfig(image_input="spatial", dropout=0.0, **SMALL))
    pooled = JointEmbedding(EmbeddingConfig(image_input="pooled", dropout=0.0, **SMALL))
    pooled.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("image_pool")})
    cells = torch.randn(2, 4, 24)
    assert torch.allclose(model.encode_image(cells), pooled.encode_image(cells.mean(1)), atol=1e-6)
    model.encode_image(cells).sum().backward()
    assert model.image_pool.score[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        model.encode_image(cells.mean(1))


def test_project_spatial_gives_unit_cell_vectors_consistent_with_the_linear_head() -> None:
    torch.manual_seed(3)
    model = JointEmbedding(EmbeddingConfig(head="linear", input_norm=False, **SMALL)).eval()
    cells = torch.randn(2, 4, 24)
    out = model.project_spatial(cells)
    assert out["cell_emb"].shape == (2, 4, 16) and out["cell_weight"].shape == (2, 4)
    assert torch.allclose(out["cell_emb"].norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    # A linear head commutes with the mean: the mean of raw cell projections is the image's.
    raw = model.image_head(cells).mean(1)
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=-1), model.encode_image(cells), atol=1e-5)


def test_model_round_trips_through_a_checkpoint(tmp_path) -> None:
    torch.manual_seed(4)
    cfg = EmbeddingConfig(image_input="spatial", **SMALL)
    model = JointEmbedding(cfg).eval()
    tensors, cfg_dict = checkpoint_to_dict(model, cfg)
    save_checkpoint(tmp_path, tensors=tensors, config=cfg_dict, meta={"kind": "embedding"})
    t2, c2, _ = load_checkpoint(tmp_path, expected_kind="embedding")
    again = embedding_from_state(c2, t2)
    cells, text = torch.randn(2, 4, 24), torch.randn(3, 12)
    assert torch.equal(again.encode_image(cells), model.encode_image(cells))
    assert torch.equal(again.encode_text(text), model.encode_text(text))
