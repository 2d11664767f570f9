"""Tests for embeddings/ml/captioner.py: config, decoder shapes, step/forward agreement, losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from embeddings.ml.captioner import (
    AttentionDecoder,
    CaptionerConfig,
    ShowTellDecoder,
    build_decoder,
    caption_loss,
)
from embeddings.ml.vocab import BOS_ID, EOS_ID, PAD_ID

torch.set_num_threads(1)


def tiny_config(decoder: str = "attention", **kw: object) -> CaptionerConfig:
    base = dict(decoder=decoder, vocab_size=12, feature_dim=8, num_cells=4, embed_dim=6, hidden_dim=10,
                context_dim=7, attention_dim=5, dropout=0.0, max_len=6)
    base.update(kw)
    return CaptionerConfig(**base)  # type: ignore[arg-type]


def feats(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    spatial = torch.rand(batch, 4, 8, generator=g)  # (B, N, F)
    return spatial.mean(dim=1), spatial  # (B, F), (B, N, F)


def test_from_dict_rejects_unknown_keys_and_round_trips() -> None:
    config = tiny_config()
    assert CaptionerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        CaptionerConfig.from_dict({**config.to_dict(), "hiden_dim": 3})
    with pytest.raises(ValueError):
        CaptionerConfig.from_dict({**config.to_dict(), "decoder": "transformer"})


def test_config_rejects_bad_values_and_build_needs_vocab_size() -> None:
    with pytest.raises(ValueError):
        tiny_config(vocab_size=3)
    with pytest.raises(ValueError):
        tiny_config(dropout=1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        build_decoder(CaptionerConfig())


@pytest.mark.parametrize("kind, cls", [("show_tell", ShowTellDecoder), ("attention", AttentionDecoder)])
def test_forward_gives_logits_per_input_token(kind: str, cls: type) -> None:
    model = build_decoder(tiny_config(kind))
    assert isinstance(model, cls)
    pooled, spatial = feats()
    inputs = torch.tensor([[BOS_ID, 4, 5, 6]] * 3)  # (B, T)
    out = model(pooled, spatial, inputs)
    assert out["logits"].shape == (3, 4, 12)
    if kind == "attention":
        alphas = out["alphas"]
        assert alphas.shape == (3, 4, 4)
        assert torch.allclose(alphas.sum(-1), torch.ones(3, 4), atol=1e-6)  # a distribution over cells
    else:
        assert "alphas" not in out


@pytest.mark.parametrize("kind", ["show_tell", "attention"])
def test_forward_matches_manual_stepping(kind: str) -> None:
    model = build_decoder(tiny_config(kind)).eval()
    pooled, spatial = feats()
    inputs = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 7, 8], [BOS_ID, 9, 4]])
    logits = model(pooled, spatial, inputs)["logits"]
    memory = model.encode(pooled, spatial)
    state = model.init_state(memory)
    for t in range(inputs.shape[1]):
        step_logits, state, _ = model.step(inputs[:, t], state, memory)
        torch.testing.assert_close(step_logits, logits[:, t])


def test_rows_are_independent_of_each_other() -> None:
    model = build_decoder(tiny_config()).eval()
    pooled, spatial = feats(4)
    inputs = torch.randint(4, 12, (4, 5))
    full = model(pooled, spatial, inputs)["logits"]
    one = model(pooled[2:3], spatial[2:3], inputs[2:3])["logits"]
    torch.testing.assert_close(full[2:3], one)


@pytest.mark.parametrize("kind", ["show_tell", "attention"])
def test_grouped_images_and_shrinking_batch_match_the_plain_forward(kind: str) -> None:
    model = build_decoder(tiny_config(kind)).eval()
    pooled, spatial = feats(2)  # 2 images
    image_index = torch.tensor([1, 0, 1, 0])  # 4 caption rows
    inputs = torch.tensor([[BOS_ID, 4, 5, 6], [BOS_ID, 7, 8, PAD_ID], [BOS_ID, 9, PAD_ID, PAD_ID],
                           [BOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    lengths = torch.tensor([4, 3, 2, 1])
    fast = model(pooled, spatial, inputs, image_index=image_index, lengths=lengths)
    plain = model(pooled[image_index], spatial[image_index], inputs)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(fast["logits"][row, :n], plain["logits"][row, :n])
        assert bool((fast["logits"][row, n:] == 0).all())
    with pytest.raises(ValueError, match="sorted"):
        model(pooled, spatial, inputs, image_index=image_index, lengths=torch.tensor([1, 4, 3, 2]))


@pytest.mark.parametrize("kind", ["show_tell", "attention"])
def test_packed_forward_gives_the_same_loss_and_gradients_as_the_padded_one(kind: str) -> None:
    """The packed path (one output-layer product over the real positions) against the per-step
    padded logits, with dropout on: same dropout draws, same loss parts, same gradients."""
    model = build_decoder(tiny_config(kind, dropout=0.3)).train()
    pooled, spatial = feats(2)
    image_index = torch.tensor([1, 0, 1, 0])
    inputs = torch.tensor([[BOS_ID, 4, 5, 6], [BOS_ID, 7, 8, PAD_ID], [BOS_ID, 9, PAD_ID, PAD_ID],
                           [BOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    targets = torch.tensor([[4, 5, 6, EOS_ID], [7, 8, EOS_ID, PAD_ID], [9, EOS_ID, PAD_ID, PAD_ID],
                            [EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    lengths = torch.tensor([4, 3, 2, 1])
    results = []
    for packed in (False, True):
        torch.manual_seed(5)
        model.zero_grad()
        out = model(pooled, spatial, inputs, image_index=image_index, lengths=lengths, packed=packed)
        parts = caption_loss(out, targets, label_smoothing=0.1, attention_weight=1.0)
        sum(parts.values()).backward()
        results.append((out, {k: float(v.detach()) for k, v in parts.items()},
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (padded, loss_a, grad_a), (packed_out, loss_b, grad_b) = results
    assert "logits" not in packed_out and packed_out["packed_logits"].shape[0] == int(lengths.sum())
    torch.testing.assert_close(packed_out["packed_logits"],
                               padded["logits"][packed_out["packed_rows"], packed_out["packed_steps"]])
    assert loss_a == pytest.approx(loss_b, rel=1e-6) and set(grad_a) == set(grad_b)
    for name, grad in grad_a.items():
        torch.testing.assert_close(grad, grad_b[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="packed"):
        model(pooled, spatial, inputs, image_index=image_index, packed=True)  # needs lengths


def test_tied_embeddings_share_the_output_matrix() -> None:
    model = build_decoder(tiny_config(tie_embeddings=True))
    assert model.out.weight is model.embed.weight
    untied = build_decoder(tiny_config(tie_embeddings=False))
    assert untied.out.weight is not untied.embed.weight


def test_attention_decoder_requires_spatial_features() -> None:
    model = build_decoder(tiny_config())
    pooled, _ = feats()
    with pytest.raises(ValueError, match="spatial"):
        model(pooled, None, torch.tensor([[BOS_ID]] * 3))


def test_caption_loss_ignores_padding_and_matches_cross_entropy() -> None:
    logits = torch.randn(2, 3, 12)
    targets = torch.tensor([[4, EOS_ID, PAD_ID], [5, 6, EOS_ID]])
    parts = caption_loss({"logits": logits}, targets)
    keep = targets != PAD_ID
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(parts["caption_loss"], expected)
    assert set(parts) == {"caption_loss"}


def test_attention_loss_is_zero_when_each_cell_gets_one_unit() -> None:
    # 2 cells over 2 real steps, attention alternating: every cell sums to exactly 1.
    alphas = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])  # (1, T=3, N=2), last step is padding
    targets = torch.tensor([[4, EOS_ID, PAD_ID]])
    parts = caption_loss({"logits": torch.zeros(1, 3, 12), "alphas": alphas}, targets, attention_weight=2.0)
    assert float(parts["attention_loss"]) == pytest.approx(0.0)
    lopsided = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]]])
    parts = caption_loss({"logits": torch.zeros(1, 3, 12), "alphas": lopsided}, targets, attention_weight=2.0)
    assert float(parts["attention_loss"]) == pytest.approx(2.0 * ((1 - 2) ** 2 + 1**2) / 2)


def test_label_smoothing_raises_loss_of_confident_correct_predictions() -> None:
    logits = torch.full((1, 1, 12), -10.0)
    logits[0, 0, 4] = 10.0
    targets = torch.tensor([[4]])
    plain = caption_loss({"logits": logits}, targets)["caption_loss"]
    smooth = caption_loss({"logits": logits}, targets, label_smoothing=0.1)["caption_loss"]
    assert float(smooth) > float(plain) + 1.0


def test_scheduled_sampling_changes_inputs_only_when_enabled() -> None:
    model = build_decoder(tiny_config("show_tell")).eval()
    pooled, spatial = feats()
    inputs = torch.randint(4, 12, (3, 5))
    inputs[:, 0] = BOS_ID
    base = model(pooled, spatial, inputs)["logits"]
    same = model(pooled, spatial, inputs, sampling_prob=0.0)["logits"]
    torch.testing.assert_close(base, same)
    g = torch.Generator().manual_seed(0)
    mixed = model(pooled, spatial, inputs, sampling_prob=1.0, generator=g)["logits"]
    torch.testing.assert_close(mixed[:, 0], base[:, 0])  # the first step always sees <bos>
    assert not torch.allclose(mixed[:, 1:], base[:, 1:])


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_config().hidden_dim = 3  # type: ignore[misc]
