"""Tests for embeddings/ml/word2vec.py (gensim skip-gram) and its checkpoint files (word2vec_io.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from embeddings.ml import word2vec_io
from embeddings.ml.word2vec import (
    CLASSIC_ANALOGIES,
    UnknownWord,
    Vocab,
    Word2Vec,
    Word2VecConfig,
    Word2VecProgress,
    analogies_in_vocabulary,
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
SMALL = Word2VecConfig(dim=16, window=3, min_count=1, sample=0.0, epochs=8, seed=0, workers=1)


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
    return train_word2vec(topic_corpus(), SMALL)


def test_config_from_dict_round_trips_and_rejects_unknown_keys() -> None:
    assert Word2VecConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown key"):
        Word2VecConfig.from_dict({"dim": 8, "hidden": 3})
    with pytest.raises(ValueError):
        Word2VecConfig.from_dict({"dim": "8"})
    with pytest.raises(TypeError):
        Word2VecConfig(optimizer="adamw")  # the torch trainer's knob is gone  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Word2VecConfig(window=0)
    with pytest.raises(ValueError):
        Word2VecConfig(workers=0)
    with pytest.raises(ValueError):
        Word2VecConfig(lr=0.01, min_lr=0.1)


def test_gensim_training_lowers_the_loss_reports_progress_and_orders_the_vocabulary() -> None:
    seen: list[Word2VecProgress] = []
    model = train_word2vec(topic_corpus(), SMALL, on_progress=seen.append)
    assert [p.epoch for p in seen] == list(range(1, SMALL.epochs + 1))
    assert model.epoch_losses == tuple(p.loss for p in seen)
    assert model.epoch_losses[-1] < model.epoch_losses[0]
    # Vocab promises count descending, ties by word; counts are the corpus counts.
    counts = {w: c for w, c in zip(model.words, model.vocab.counts)}
    expected = {}
    for sentence in topic_corpus():
        for w in sentence:
            expected[w] = expected.get(w, 0) + 1
    assert counts == expected
    assert list(model.words) == sorted(expected, key=lambda w: (-expected[w], w))
    assert model.vectors.shape == (len(expected), SMALL.dim)


def test_one_worker_training_is_reproducible_with_a_seed() -> None:
    corpus = topic_corpus(120)
    config = Word2VecConfig(dim=8, window=2, min_count=1, epochs=2, seed=5, workers=1)
    a, b = train_word2vec(corpus, config), train_word2vec(corpus, config)
    c = train_word2vec(corpus, Word2VecConfig.from_dict({**config.to_dict(), "seed": 6}))
    assert torch.equal(a.vectors, b.vectors)
    assert not torch.equal(a.vectors, c.vectors)


def test_two_lock_free_workers_also_learn_the_topics() -> None:
    model = train_word2vec(topic_corpus(), Word2VecConfig.from_dict({**SMALL.to_dict(), "workers": 2}))
    assert {w for w, _ in model.nearest("cow", k=4)} <= set(ANIMALS)


def test_the_words_page_analogies_are_those_whose_words_are_all_known() -> None:
    flickr_like = {"man", "boy", "woman", "girl", "men", "women", "dog", "dogs"}
    shown = analogies_in_vocabulary(flickr_like)
    assert ("man", "boy", "woman", "girl") in shown and ("man", "men", "woman", "women") in shown
    assert ("man", "king", "woman", "queen") not in shown  # no "king" or "queen" in these captions
    assert all(set(a) <= flickr_like for a in shown)
    assert shown == [a for a in CLASSIC_ANALOGIES if a in shown]  # the list's order
    assert analogies_in_vocabulary(set()) == []

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
    config = Word2VecConfig(dim=16, window=2, min_count=1, sample=0.0, epochs=10, seed=1, workers=1)
    model = train_word2vec(planted_corpus(), config)
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




def test_strings_are_split_by_the_caption_tokenizer() -> None:
    captions = ["A dog's t-shirt.", "The dog, a CAT!"] * 5
    config = Word2VecConfig(dim=4, window=2, min_count=1, epochs=1, workers=1)
    model = train_word2vec(captions, config)
    assert set(model.words) == {"a", "dog's", "t-shirt", "the", "dog", "cat"}
    assert tokenize("The dog, a CAT!") == ["the", "dog", "a", "cat"]


def test_too_small_a_vocabulary_is_rejected() -> None:
    with pytest.raises(ValueError, match="need at least 2"):
        train_word2vec([["a", "b"]], Word2VecConfig(min_count=2))


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
    other = bytes(blob).replace(b'"format_version":"2"', b'"format_version":"9"')
    assert other != bytes(blob)
    with pytest.raises(IncompatibleCheckpoint, match="version"):
        word2vec_from_bytes(other)


def _v1_blob(words: list[str], vectors: torch.Tensor) -> bytes:
    """A file as the torch trainer (format version 1) wrote it."""
    config = {"dim": vectors.shape[1], "window": 5, "min_count": 5, "negatives": 5, "sample": 0.001,
              "ns_exponent": 0.75, "epochs": 5, "batch_size": 4096, "optimizer": "adam", "lr": 0.01,
              "min_lr_ratio": 0.01, "table_size": 1000000, "seed": 0}
    payload = json.dumps({"config": config, "words": words, "counts": [9] * len(words), "epoch_losses": [2.6, 2.1]},
                         sort_keys=True)
    metadata = {"format": word2vec_io.FORMAT, "format_version": "1", "payload": payload,
                "sha256": word2vec_io._digest(payload, vectors)}
    return st_save({"vectors": vectors}, metadata=metadata)


def test_files_written_by_the_torch_trainer_still_load() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    model = word2vec_io.word2vec_from_bytes(_v1_blob(["dog", "puppy", "car"], vectors))
    assert model.words == ("dog", "puppy", "car") and torch.equal(model.vectors, vectors)
    assert model.nearest("dog", 1)[0][0] == "puppy"
    assert model.config.dim == 2 and model.config.window == 5 and model.epoch_losses == (2.6, 2.1)
