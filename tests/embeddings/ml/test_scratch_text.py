"""Tests for embeddings/ml/scratch_text.py: the word2vec-seeded GRU caption encoder."""

from __future__ import annotations

import random

import pytest
import torch

from embeddings.ml.heads import EmbeddingConfig, JointEmbedding
from embeddings.ml.scratch_text import ScratchTextConfig, ScratchTextEncoder, scratch_text_from_state
from embeddings.ml.vocab import PAD_ID, UNK_ID, Vocabulary
from embeddings.ml.word2vec import Vocab, Word2Vec, Word2VecConfig, train_word2vec
from training.ml.losses import info_nce_loss

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck"]
VEHICLES = ["car", "bus", "truck", "train", "bike", "boat", "plane", "tram"]
TINY = ScratchTextConfig(embed_dim=8, hidden=16, out_dim=12, dropout=0.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra threads only add overhead (and the CI box is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hand_set_w2v() -> Word2Vec:
    words = ANIMALS + VEHICLES
    vectors = torch.randn(len(words), 8, generator=torch.Generator().manual_seed(0))
    return Word2Vec(Word2VecConfig(dim=8, min_count=1), Vocab(words, [1] * len(words)), vectors)


def test_embedding_starts_equal_to_the_word2vec_vectors() -> None:
    w2v = train_word2vec(
        [random.Random(i).choices(ANIMALS if i % 2 else VEHICLES, k=5) for i in range(100)],
        Word2VecConfig(dim=8, window=2, min_count=1, epochs=1, batch_size=64),
        device="cpu",
    )
    enc = ScratchTextEncoder.from_word2vec(w2v, TINY)
    weight = enc.embed.weight.detach()
    for i, word in enumerate(w2v.words):
        assert enc.vocab.id_of(word) == 4 + i
        assert torch.equal(weight[enc.vocab.id_of(word)], w2v.vector(word))
    assert torch.equal(weight[PAD_ID], torch.zeros(8))
    assert torch.allclose(weight[UNK_ID], w2v.vectors.mean(dim=0))


def test_config_round_trips_rejects_unknown_keys_and_a_dim_mismatch() -> None:
    assert ScratchTextConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown key"):
        ScratchTextConfig.from_dict({"hidden": 4, "heads": 2})
    with pytest.raises(ValueError):
        ScratchTextConfig(pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embed_dim"):
        ScratchTextEncoder.from_word2vec(hand_set_w2v(), ScratchTextConfig(embed_dim=5))


def test_tokenize_maps_unknown_words_to_unk_and_empty_text_to_one_unk() -> None:
    enc = ScratchTextEncoder.from_word2vec(hand_set_w2v(), TINY)
    batch = enc.tokenize(["A dog, a car!", ""])
    a = enc.vocab.id_of
    assert batch["input_ids"].tolist() == [[UNK_ID, a("dog"), UNK_ID, a("car")], [UNK_ID, PAD_ID, PAD_ID, PAD_ID]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    with pytest.raises(TypeError):
        enc.tokenize("dog car")


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_does_not_change_a_caption_vector(pooling: str, bidirectional: bool) -> None:
    config = ScratchTextConfig.from_dict({**TINY.to_dict(), "pooling": pooling, "bidirectional": bidirectional})
    enc = ScratchTextEncoder.from_word2vec(hand_set_w2v(), config).eval()
    alone = enc.encode(["dog cat"])
    padded = enc.encode(["dog cat", "bus car truck train bike boat plane tram"])
    assert alone.shape == (1, 12)
    torch.testing.assert_close(padded[:1], alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(padded[1], alone[0])


def test_last_pooling_of_a_forward_gru_is_its_final_hidden_state() -> None:
    config = ScratchTextConfig.from_dict({**TINY.to_dict(), "pooling": "last", "bidirectional": False})
    enc = ScratchTextEncoder.from_word2vec(hand_set_w2v(), config).eval()
    batch = enc.tokenize(["dog cat horse"])
    with torch.no_grad():
        steps, _ = enc.gru(enc.embed(batch["input_ids"]))  # unpacked reference, (1, 3, H)
        expected = enc.proj(steps[:, -1])
        torch.testing.assert_close(enc(batch), expected)


def test_encoder_is_deterministic_with_a_seed_and_leaves_the_global_rng_alone() -> None:
    w2v = hand_set_w2v()
    state = torch.random.get_rng_state()
    a = ScratchTextEncoder.from_word2vec(w2v, TINY).encode(["dog bus"])
    b = ScratchTextEncoder.from_word2vec(w2v, TINY).encode(["dog bus"])
    c = ScratchTextEncoder.from_word2vec(w2v, ScratchTextConfig.from_dict({**TINY.to_dict(), "seed": 1}))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c.encode(["dog bus"]))


def test_state_round_trips_through_to_dict() -> None:
    enc = ScratchTextEncoder.from_word2vec(hand_set_w2v(), TINY)
    data = enc.to_dict()
    again = scratch_text_from_state(data["config"], data["vocab"], data["tensors"])
    assert again.vocab.words == enc.vocab.words
    assert torch.equal(again.encode(["cow on a tram"]), enc.encode(["cow on a tram"]))


def test_frozen_embeddings_stay_at_the_word2vec_vectors_while_the_gru_learns() -> None:
    w2v = hand_set_w2v()
    config = ScratchTextConfig.from_dict({**TINY.to_dict(), "freeze_embeddings": True})
    enc = ScratchTextEncoder.from_word2vec(w2v, config)
    gru_before = enc.gru.weight_ih_l0.detach().clone()
    opt = torch.optim.Adam([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    loss = enc(enc.tokenize(["dog cat", "bus car"])).pow(2).sum()
    loss.backward()
    opt.step()
    assert torch.equal(enc.embed.weight[4:].detach(), w2v.vectors)
    assert not torch.equal(enc.gru.weight_ih_l0.detach(), gru_before)


def test_joint_embedding_trains_end_to_end_with_the_scratch_text_side() -> None:
    """Two topics, one fixed random 'image feature' per topic: after training, each caption's
    nearest image is its topic's, and the word embeddings have moved (they are trained)."""
    torch.manual_seed(0)
    rnd = random.Random(0)
    w2v = hand_set_w2v()
    enc = ScratchTextEncoder.from_word2vec(w2v, ScratchTextConfig(embed_dim=8, hidden=16, out_dim=24, dropout=0.0))
    joint = JointEmbedding(EmbeddingConfig(dim=16, head="linear", dropout=0.0, image_dim=32, text_dim=24))
    image_feats = torch.randn(2, 32)  # topic 0 = animals, 1 = vehicles
    opt = torch.optim.Adam([*enc.parameters(), *joint.parameters()], lr=3e-3)

    def batch(n: int) -> tuple[list[str], torch.Tensor]:
        topics = torch.tensor([i % 2 for i in range(n)])
        texts = [" ".join(rnd.choices(VEHICLES if t else ANIMALS, k=4)) for t in topics.tolist()]
        return texts, topics

    def accuracy() -> float:
        texts, topics = batch(64)
        with torch.no_grad():
            out = joint(image_feats, enc(enc.tokenize(texts)))
        return float(((out["text_emb"] @ out["image_emb"].T).argmax(dim=1) == topics).float().mean())

    for _ in range(60):
        texts, topics = batch(16)
        out = joint(image_feats, enc(enc.tokenize(texts)))
        losses = info_nce_loss(out["image_emb"], out["text_emb"], out["logit_scale"], torch.tensor([0, 1]), topics)
        opt.zero_grad()
        sum(v for k, v in losses.items() if k.endswith("_loss")).backward()
        opt.step()
    assert accuracy() == 1.0
    assert not torch.equal(enc.embed.weight[4:].detach(), w2v.vectors)


def test_vocabulary_comes_from_word2vec_and_matches_the_caption_vocabulary_type() -> None:
    enc = ScratchTextEncoder.from_word2vec(hand_set_w2v(), TINY)
    assert isinstance(enc.vocab, Vocabulary)
    assert enc.vocab.words[4:] == ANIMALS + VEHICLES
