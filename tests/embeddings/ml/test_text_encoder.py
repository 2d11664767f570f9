"""Tests for embeddings/ml/text_encoder.py with the real all-MiniLM-L6-v2 (CPU)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from embeddings.ml.text_encoder import TextEncoder, bert_inference, default_model_path, mean_pool, pad_states

TEXTS = [
    "A dog runs through the snow .",
    "Two children are playing football on a green grass field near the school .",
    "a",
    "A man in a red hat climbs a rock wall while his friend watches from below .",
    "People on a beach",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


def test_matches_sentence_transformers_encode(encoder):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_path()), device="cpu")
    expected = reference.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    got = encoder.encode(TEXTS, batch_size=2)
    assert got.shape == (len(TEXTS), 384)
    assert torch.allclose(got, expected.cpu().float(), atol=1e-4)


def test_inference_path_equals_the_transformers_forward(encoder):
    """encode() runs bert_inference (no grad); it must give the module's own hidden states."""
    batch = encoder.tokenize(TEXTS)  # padded: the mask matters
    with torch.no_grad():
        ref = encoder.model(**batch).last_hidden_state
        got = bert_inference(encoder.model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        one = encoder.tokenize(TEXTS[:1])  # unpadded: no mask at all
        ref1 = encoder.model(**one).last_hidden_state
        got1 = bert_inference(encoder.model, one["input_ids"], one["attention_mask"])
    valid = batch["attention_mask"].bool()
    assert (got - ref)[valid].abs().max() < 1e-4 and (got1 - ref1).abs().max() < 1e-4
    pooled = torch.nn.functional.normalize(mean_pool(ref, batch["attention_mask"]), dim=-1)
    assert torch.allclose(encoder.encode(TEXTS, batch_size=len(TEXTS)), pooled, atol=1e-5)
    # with gradients on (training), forward goes through the transformers module itself
    with torch.enable_grad():
        assert encoder(batch).requires_grad is any(p.requires_grad for p in encoder.parameters())


def test_vectors_are_unit_length_unless_asked_otherwise(encoder):
    assert torch.allclose(encoder.encode(TEXTS).norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    raw = encoder.encode(TEXTS, normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-2)


def test_output_order_does_not_depend_on_batching(encoder):
    one = encoder.encode(TEXTS, batch_size=1)
    many = encoder.encode(TEXTS, batch_size=64)
    assert torch.allclose(one, many, atol=1e-5)
    assert torch.allclose(encoder.encode(TEXTS[2:3])[0], many[2], atol=1e-5)


@pytest.mark.parametrize("layer", [0, 4, 6])
def test_top_layers_from_cached_states_reproduce_encode(encoder, layer):
    states = encoder.token_states(TEXTS, layer, batch_size=2)
    assert [s.shape[1] for s in states] == [384] * len(TEXTS)
    assert states[2].shape[0] == 3  # [CLS] a [SEP]: padding is dropped
    padded, mask = pad_states(states)  # (B, T, 384), (B, T)
    with torch.no_grad():
        got = encoder.forward_from(padded, mask, layer)
    assert torch.allclose(got, encoder.encode(TEXTS), atol=1e-4)


def test_encode_with_states_gives_both_in_one_pass(encoder):
    vecs, states = encoder.encode_with_states(TEXTS, 4, batch_size=2)
    assert torch.allclose(vecs, encoder.encode(TEXTS), atol=1e-5)
    for s, ref in zip(states, encoder.token_states(TEXTS, 4)):
        assert torch.allclose(s, ref, atol=1e-5)


def test_fine_tuning_top_layers_updates_only_those(encoder):
    states = encoder.token_states(TEXTS[:2], 4)
    padded, mask = pad_states(states)
    try:
        encoder.set_trainable_layers(2)
        trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
        assert trainable and all(".layer.4." in n or ".layer.5." in n for n in trainable)
        encoder.forward_from(padded, mask, 4).sum().backward()
        assert encoder.model.encoder.layer[5].output.dense.weight.grad is not None
        assert encoder.model.encoder.layer[3].output.dense.weight.grad is None
    finally:
        encoder.set_trainable_layers(0)
        encoder.zero_grad(set_to_none=True)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


def test_identity_names_the_sha256_of_the_weights(encoder):
    digest = hashlib.sha256((default_model_path() / "model.safetensors").read_bytes()).hexdigest()
    assert digest in encoder.identity


def test_rejects_a_bare_string_and_bad_layers(encoder):
    with pytest.raises(TypeError):
        encoder.encode("a dog")
    with pytest.raises(ValueError):
        encoder.token_states(TEXTS, 7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_encode_is_close_to_cpu(encoder):
    gpu = TextEncoder(device="cuda").encode(TEXTS)
    cos = torch.nn.functional.cosine_similarity(encoder.encode(TEXTS), gpu, dim=1)
    assert (cos > 0.99).all()
