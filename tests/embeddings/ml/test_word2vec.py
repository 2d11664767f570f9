"""Tests for embeddings/ml/word2vec.py and its checkpoint files (word2vec_io.py)."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from embeddings.ml.word2vec import (
    Word2VecProgress,
    UnknownWord,
    Vocab,
    Word2Vec,
    Word2VecConfig,
    build_vocab,
    keep_probabilities,
    negative_table,
    skipgram_pairs,
    tokenize,
    train_word2vec,
)
from embeddings.ml.word2vec_io import (
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    load_word2vec,
    save_word2vec,
    word2vec_from_bytes,
    word2vec_to_bytes,
)

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck"]
VEHICLES = ["car", "bus", "truck", "train", "bike", "boat", "plane", "tram"]
SMALL = Word2VecConfig(dim=16, window=3, min_count=1, sample=0.0, epochs=8, batch_size=256, lr=0.02, seed=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra threads only add overhead (and the CI box is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def topic_corpus(n: int = 400, seed: int = 0) -> list[list[str]]:
    """Sentences drawn from one of two disjoint vocabularies: words co-occur only within a topic."""
    rnd = random.Random(seed)
    return [rnd.choices(ANIMALS if i % 2 else VEHICLES, k=6) for i in range(n)]


# Each word is a (gender, rank) cell; its contexts mix gender-only and rank-only words, so its
# vector is close to gender + rank and the analogy structure is planted by construction.
GRID = {
    ("male", "adult"): "man",
    ("female", "adult"): "woman",
    ("male", "royal"): "king",
    ("female", "royal"): "queen",
    ("male", "child"): "boy",
    ("female", "child"): "girl",
}


def planted_corpus(n: int = 600, seed: int = 0) -> list[list[str]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        (gender, rank), word = rnd.choice(list(GRID.items()))
        ctx = [f"{gender}{rnd.randrange(4)}" for _ in range(2)] + [f"{rank}{rnd.randrange(4)}" for _ in range(2)]
        rnd.shuffle(ctx)
        out.append(ctx[:2] + [word] + ctx[2:])
    return out


@pytest.fixture(scope="module")
def topic_model(_one_thread: None) -> Word2Vec:
    return train_word2vec(topic_corpus(), SMALL, device="cpu")


def test_config_from_dict_round_trips_and_rejects_unknown_keys() -> None:
    assert Word2VecConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown key"):
        Word2VecConfig.from_dict({"dim": 8, "hidden": 3})
    with pytest.raises(ValueError):
        Word2VecConfig.from_dict({"dim": "8"})
    with pytest.raises(ValueError):
        Word2VecConfig(optimizer="adamw")
    with pytest.raises(ValueError):
        Word2VecConfig(window=0)


def test_vocab_drops_rare_words_and_orders_by_count_then_word() -> None:
    vocab = build_vocab([["b", "a", "c"], ["a", "b", "d"], ["a"]], min_count=2)
    assert vocab.words == ("a", "b")
    assert vocab.counts == (3, 2)
    with pytest.raises(UnknownWord):
        vocab.index("c")


def test_keep_probabilities_match_the_reference_formula() -> None:
    counts = np.array([600.0, 300.0, 100.0])
    t = 1e-2
    f = counts / counts.sum()
    expected = np.minimum(1.0, (np.sqrt(f / t) + 1) * t / f)
    np.testing.assert_allclose(keep_probabilities(counts, t), expected)
    assert keep_probabilities(counts, t)[0] < keep_probabilities(counts, t)[2]
    np.testing.assert_array_equal(keep_probabilities(counts, 0.0), np.ones(3))


def test_negative_table_shares_follow_unigram_to_the_three_quarters() -> None:
    counts = np.array([1000, 100, 10, 1])
    table = negative_table(counts, 0.75, 100_000)
    share = np.bincount(table, minlength=4) / len(table)
    expected = counts**0.75 / (counts**0.75).sum()
    np.testing.assert_allclose(share, expected, atol=1e-4)


def test_skipgram_pairs_match_a_brute_force_dynamic_window() -> None:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 50, size=200)
    sentence_of = np.sort(rng.integers(0, 20, size=200))
    window = 4
    centres, contexts = skipgram_pairs(ids, sentence_of, window, np.random.default_rng(7))
    reach = np.random.default_rng(7).integers(1, window + 1, size=len(ids))  # the same first draw
    expected = Counter()
    for i in range(len(ids)):
        for j in range(i - reach[i], i + reach[i] + 1):
            if j != i and 0 <= j < len(ids) and sentence_of[j] == sentence_of[i]:
                expected[(int(ids[i]), int(ids[j]))] += 1
    assert Counter(zip(centres.tolist(), contexts.tolist())) == expected


def test_training_lowers_the_loss_and_reports_progress() -> None:
    seen: list[Word2VecProgress] = []
    model = train_word2vec(topic_corpus(), SMALL, device="cpu", on_progress=seen.append)
    assert [p.epoch for p in seen] == list(range(1, SMALL.epochs + 1))
    # Output vectors start at zero, so the loss starts at (1 + negatives) * ln 2 per pair.
    start = (1 + SMALL.negatives) * math.log(2)
    assert model.epoch_losses[0] < start
    assert model.epoch_losses[-1] < 0.8 * model.epoch_losses[0]
    assert model.epoch_losses == tuple(p.loss for p in seen)


def test_nearest_neighbours_come_from_the_same_topic(topic_model: Word2Vec) -> None:
    for word in ["dog", "sheep", "bus", "plane"]:
        topic = ANIMALS if word in ANIMALS else VEHICLES
        neighbours = topic_model.nearest(word, k=5)
        assert [w for w, _ in neighbours if w not in topic] == [], (word, neighbours)
        assert word not in [w for w, _ in neighbours]
        sims = [s for _, s in neighbours]
        assert sims == sorted(sims, reverse=True)


def test_nearest_on_hand_set_vectors_matches_brute_force_cosine() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    words = [f"w{i}" for i in range(30)]
    model = Word2Vec(Word2VecConfig(dim=8), Vocab(words, [30 - i for i in range(30)]), torch.from_numpy(vectors))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit[4]
    sims[4] = -np.inf
    expected = [words[i] for i in np.argsort(-sims)[:6]]
    got = model.nearest("w4", k=6)
    assert [w for w, _ in got] == expected
    np.testing.assert_allclose([s for _, s in got], np.sort(sims)[::-1][:6], rtol=1e-5)


def test_analogy_on_hand_set_vectors_returns_the_constructed_answer() -> None:
    # Axes: male, female, royal, young. queen = female + royal exactly.
    words = ["man", "woman", "king", "queen", "boy", "girl", "apple"]
    vectors = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]],
        dtype=torch.float32,
    )
    model = Word2Vec(Word2VecConfig(dim=4), Vocab(words, [1] * len(words)), vectors)
    assert model.analogy("man", "king", "woman", k=1)[0][0] == "queen"
    assert model.analogy("man", "boy", "woman", k=1)[0][0] == "girl"
    # The query words themselves are never answers, even when they are the nearest.
    answers = [w for w, _ in model.analogy("man", "king", "woman", k=10)]
    assert {"man", "king", "woman"}.isdisjoint(answers)
    assert len(answers) == len(words) - 3


def test_analogy_on_a_planted_corpus_recovers_the_structure() -> None:
    config = Word2VecConfig(dim=16, window=2, min_count=1, sample=0.0, epochs=10, batch_size=256, lr=0.02, seed=1)
    model = train_word2vec(planted_corpus(), config, device="cpu")
    assert model.analogy("man", "king", "woman", k=1)[0][0] == "queen"
    assert model.analogy("boy", "man", "girl", k=1)[0][0] == "woman"
    assert model.analogy("king", "queen", "boy", k=1)[0][0] == "girl"


def test_unknown_words_raise_a_typed_key_error(topic_model: Word2Vec) -> None:
    with pytest.raises(UnknownWord) as info:
        topic_model.nearest("spaceship")
    assert info.value.word == "spaceship"
    assert isinstance(info.value, KeyError)
    assert "spaceship" in str(info.value)
    with pytest.raises(UnknownWord):
        topic_model.analogy("dog", "cat", "spaceship")
    with pytest.raises(UnknownWord):
        topic_model.vector("spaceship")
    assert "spaceship" not in topic_model and "dog" in topic_model


def test_training_is_deterministic_with_a_seed() -> None:
    corpus = topic_corpus(120)
    config = Word2VecConfig(dim=8, window=2, min_count=1, epochs=2, batch_size=128, seed=5)
    a = train_word2vec(corpus, config, device="cpu")
    b = train_word2vec(corpus, config, device="cpu")
    c = train_word2vec(corpus, Word2VecConfig.from_dict({**config.to_dict(), "seed": 6}), device="cpu")
    assert torch.equal(a.vectors, b.vectors)
    assert a.epoch_losses == b.epoch_losses
    assert not torch.equal(a.vectors, c.vectors)


@pytest.mark.parametrize(("optimizer", "lr"), [("sparse_adam", 0.02), ("sgd", 0.025)])
def test_the_other_optimizers_also_train(optimizer: str, lr: float) -> None:
    config = Word2VecConfig.from_dict({**SMALL.to_dict(), "optimizer": optimizer, "lr": lr})
    model = train_word2vec(topic_corpus(), config, device="cpu")
    assert model.epoch_losses[-1] < model.epoch_losses[0]
    assert {w for w, _ in model.nearest("cow", k=4)} <= set(ANIMALS)


def test_strings_are_split_by_the_caption_tokenizer() -> None:
    captions = ["A dog's t-shirt.", "The dog, a CAT!"] * 5
    config = Word2VecConfig(dim=4, window=2, min_count=1, epochs=1, batch_size=16)
    model = train_word2vec(captions, config, device="cpu")
    assert set(model.words) == {"a", "dog's", "t-shirt", "the", "dog", "cat"}
    assert tokenize("The dog, a CAT!") == ["the", "dog", "a", "cat"]


def test_too_small_a_vocabulary_is_rejected() -> None:
    with pytest.raises(ValueError, match="need at least 2"):
        train_word2vec([["a", "b"]], Word2VecConfig(min_count=2), device="cpu")


def test_checkpoint_round_trips_and_writes_atomically(topic_model: Word2Vec, tmp_path) -> None:
    path = save_word2vec(topic_model, tmp_path / "w2v" / "vectors.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["vectors.safetensors"]
    loaded = load_word2vec(path)
    assert torch.equal(loaded.vectors, topic_model.vectors)
    assert loaded.words == topic_model.words and loaded.vocab.counts == topic_model.vocab.counts
    assert loaded.config == topic_model.config and loaded.epoch_losses == topic_model.epoch_losses
    assert loaded.nearest("dog", 3) == topic_model.nearest("dog", 3)
    assert Word2Vec.from_dict(topic_model.to_dict()).words == topic_model.words


def test_checkpoint_detects_corruption_and_other_versions(topic_model: Word2Vec) -> None:
    blob = bytearray(word2vec_to_bytes(topic_model))
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF  # inside the vector bytes
    with pytest.raises(CorruptCheckpoint, match="sha256"):
        word2vec_from_bytes(bytes(flipped))
    with pytest.raises(CorruptCheckpoint):
        word2vec_from_bytes(bytes(blob[: len(blob) // 2]))
    other = bytes(blob).replace(b'"format_version":"1"', b'"format_version":"9"')
    assert other != bytes(blob)
    with pytest.raises(IncompatibleCheckpoint, match="version"):
        word2vec_from_bytes(other)
