"""Tests for embeddings/ml/prior_heads.py: the ConSE-prior residual and DeViSE models (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embeddings.ml.checkpoint import checkpoint_to_dict, load_checkpoint, save_checkpoint
from embeddings.ml.conse import conse_image_vectors
from embeddings.ml.heads import EmbeddingConfig, embedding_from_state
from embeddings.ml.prior_heads import PriorEmbedding, conse_mix

C, F, D = 50, 32, 24  # tiny classifier: 50 classes over 32-d features, 24-d "MiniLM" space
CFG = EmbeddingConfig(family="prior", dim=D, text_dim=D, image_dim=F, num_classes=C, hidden=16, dropout=0.0)


def _model(cfg: EmbeddingConfig = CFG, seed: int = 0) -> PriorEmbedding:
    g = torch.Generator().manual_seed(seed)
    return PriorEmbedding(cfg, class_vecs=torch.randn(C, D, generator=g), fc_weight=torch.randn(C, F, generator=g),
                          fc_bias=torch.randn(C, generator=g)).eval()


def test_untrained_conse_prior_model_equals_conse_v0() -> None:
    model = _model()
    feats = torch.rand(40, F) * 6  # ReLU6-like pooled features
    logits = (feats @ model.fc_weight.T + model.fc_bias).numpy()
    reference = conse_image_vectors(logits, model.class_vecs.numpy(), k=CFG.conse_k, temperature=CFG.conse_temperature)
    np.testing.assert_allclose(model.encode_image(feats).detach().numpy(), reference, atol=1e-5)


def test_untrained_text_side_is_plain_minilm() -> None:
    text = torch.nn.functional.normalize(torch.randn(7, D), dim=-1)
    torch.testing.assert_close(_model().encode_text(text), text)


def test_conse_mix_matches_numpy_reference_at_other_k_and_temperature() -> None:
    logits, vecs = torch.randn(9, C), torch.nn.functional.normalize(torch.randn(C, D), dim=-1)
    ref = conse_image_vectors(logits.numpy(), vecs.numpy(), k=10, temperature=0.5)
    np.testing.assert_allclose(conse_mix(logits, vecs, k=10, temperature=0.5).numpy(), ref, atol=1e-5)


def test_devise_starts_from_a_nonzero_map_and_outputs_unit_vectors() -> None:
    model = _model(EmbeddingConfig(**{**CFG.to_dict(), "prior": "none"}))
    out = model.encode_image(torch.rand(5, F))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


def test_spatial_cells_score_like_images_and_mean_cells_give_the_pooled_vector() -> None:
    model = _model()
    cells = torch.rand(2, 4, F)
    parts = model.project_spatial(cells)
    assert parts["cell_emb"].shape == (2, 4, D)
    torch.testing.assert_close(parts["cell_emb"][:, 0], model.encode_image(cells[:, 0]))
    torch.testing.assert_close(model.encode_image(cells), model.encode_image(cells.mean(dim=1)))


def test_checkpoint_round_trip_keeps_buffers_and_residuals(tmp_path) -> None:
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tensors, cfg = checkpoint_to_dict(model, CFG)
    save_checkpoint(tmp_path / "m", tensors=tensors, config=cfg, meta={"kind": "embedding"})
    loaded_t, loaded_cfg, _ = load_checkpoint(tmp_path / "m", expected_kind="embedding")
    back = embedding_from_state(loaded_cfg, loaded_t)
    assert isinstance(back, PriorEmbedding)
    x, t = torch.rand(3, F), torch.randn(3, D)
    torch.testing.assert_close(back.encode_image(x), model.encode_image(x))
    torch.testing.assert_close(back.encode_text(t), model.encode_text(t))


def test_prior_family_must_live_in_the_text_space() -> None:
    with pytest.raises(ValueError, match="dim must equal text_dim"):
        EmbeddingConfig(family="prior", dim=512)


def test_the_serving_embedder_loads_a_prior_checkpoint_and_scores_cells(tmp_path) -> None:
    """embeddings.runtime serves every trained embedding through JointEmbedder.from_checkpoint."""
    from embeddings.ml.embedder import JointEmbedder

    model = _model()
    tensors, cfg = checkpoint_to_dict(model, CFG)
    save_checkpoint(tmp_path / "m", tensors={k: v.half() for k, v in tensors.items()}, config=cfg,
                    meta={"kind": "embedding"})  # shipped checkpoints are float16
    text = torch.nn.functional.normalize(torch.randn(2, D), dim=-1).numpy()
    embedder = JointEmbedder.from_checkpoint(tmp_path / "m", lambda texts: text[:len(texts)])
    assert embedder.dim == D
    q = embedder.encode_texts(["a cat", "a rocket"])
    np.testing.assert_allclose(q, text, atol=1e-6)  # untrained text side: MiniLM itself
    cells = np.random.default_rng(0).random((4, F)).astype(np.float32) * 6
    img = embedder.encode_features({"pooled": cells.mean(axis=0, keepdims=True), "spatial": cells[None]})
    assert img.shape == (1, D) and abs(float(np.linalg.norm(img)) - 1) < 1e-5
    assert embedder.cell_scores(cells, q[0]).shape == (4,)


def test_gate_keeps_far_inputs_on_the_prior_and_near_ones_on_the_residual() -> None:
    cfg = EmbeddingConfig(**{**CFG.to_dict(), "gate": "both", "gate_centroids": 4})
    model = _model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    train_x = torch.rand(200, F) + torch.tensor([5.0] + [0.0] * (F - 1))  # a cluster along axis 0
    bounds = model.calibrate(train_x, torch.nn.functional.normalize(torch.randn(300, D), dim=-1))
    assert bounds["image_gate_lo"] < bounds["image_gate_hi"]
    far = torch.zeros(3, F)
    far[:, 1] = 6.0  # orthogonal to the training cluster
    assert float(model.gate(far, "image").max()) == 0.0
    assert float(model.gate(train_x, "image").mean()) > 0.8
    parts = model.image_parts(far)
    torch.testing.assert_close(parts["image_emb"], model.prior_vector(far))  # exactly ConSE there


def test_learned_fusion_is_one_inner_product_and_conse_far_from_the_training_data() -> None:
    cfg = EmbeddingConfig(**{**CFG.to_dict(), "gate": "image", "gate_centroids": 4, "joint_dim": 8,
                             "dim": D + 8, "prior_weight": 0.3})
    model = _model(cfg)
    train_x = torch.rand(200, F) + torch.tensor([5.0] + [0.0] * (F - 1))
    model.calibrate(train_x, torch.randn(50, D))
    text = torch.nn.functional.normalize(torch.randn(6, D), dim=-1)
    t = model.encode_text(text)
    assert t.shape == (6, D + 8)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(6))
    near = model.encode_image(train_x[:5])
    prior_part = torch.nn.functional.normalize(model.prior_vector(train_x[:5]), dim=-1)  # untrained residual
    joint_part = torch.nn.functional.normalize(model.joint_image(train_x[:5]), dim=-1)
    gate = model.gate(train_x[:5], "image")
    fused = 0.3 * prior_part @ text.T + 0.7 * (gate * joint_part) @ torch.nn.functional.normalize(
        model.joint_text(text), dim=-1).T
    norm = torch.sqrt(0.3 + 0.7 * gate ** 2)  # the image vector's norm before normalising
    torch.testing.assert_close(near @ t.T, fused / norm, atol=1e-5, rtol=1e-4)
    far = torch.zeros(2, F)
    far[:, 1] = 6.0
    torch.testing.assert_close(model.encode_image(far)[:, :D], model.prior_vector(far))
    assert float(model.encode_image(far)[:, D:].detach().abs().max()) == 0.0
