"""The static query tower (embeddings/ml/static_text.py) on the real MiniLM tokenizer and model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embeddings.ml.static_text import (STATIC_FORMAT, StaticTowerError, distil_vectors, fit_vectors, load_static,
                                       save_static, sif_weights, static_path, token_ids, tower_corpus)
from embeddings.ml.text_encoder import EMBED_DIM, TextEncoder


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    torch.set_num_threads(1)
    return TextEncoder()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_sif_weights_follow_zipf_ranks():
    w = sif_weights(30_000)
    assert w.shape == (30_000,) and np.all((w > 0) & (w < 1))
    assert np.all(np.diff(w) > 0)  # rarer (later) pieces weigh more
    inv = 1 / np.arange(2, 30_002)
    np.testing.assert_allclose(w[0], 1e-4 / (1e-4 + inv[0] / inv.sum()))


def test_distilled_rows_are_each_pieces_own_minilm_output(enc):
    table = distil_vectors(enc, pieces=40, batch=16)
    assert table.shape == (40, EMBED_DIM) and table.dtype == np.float32
    np.testing.assert_allclose(table.mean(0), 0, atol=1e-5)  # centred
    tok = enc.tokenizer
    with torch.no_grad():
        raw = []
        for i in (3, 17, 39):
            ids = torch.tensor([[tok.cls_token_id, i, tok.sep_token_id]])
            raw.append(enc.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.mean(1)[0])
    w = sif_weights(len(tok))
    rows = [r.numpy() * w[i] for r, i in zip(raw, (3, 17, 39))]
    # centring subtracts one shared vector, so differences between rows are the weighted outputs'
    np.testing.assert_allclose(table[17] - table[3], rows[1] - rows[0], atol=1e-5)
    np.testing.assert_allclose(table[39] - table[3], rows[2] - rows[0], atol=1e-5)


def _toy(seed: int = 0, vocab: int = 60, n: int = 400):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(vocab, EMBED_DIM)).astype(np.float32)
    ids = [list(rng.integers(0, vocab - 10, size=rng.integers(1, 6))) for _ in range(n)]  # the last 10 unused
    targets = _unit(np.stack([truth[i].mean(0) for i in ids])).astype(np.float32)
    start = rng.normal(size=(vocab, EMBED_DIM)).astype(np.float32)
    return start, ids, targets


def _cos(table, ids, targets) -> float:
    return float(np.mean([(_unit(table[i].mean(0)) * t).sum() for i, t in zip(ids, targets)]))


def test_fit_moves_sentence_means_onto_their_targets_and_leaves_unseen_pieces_alone():
    start, ids, targets = _toy()
    table, record = fit_vectors(start, ids, targets, epochs=10, lr=0.5)
    assert _cos(start, ids, targets) < 0.1 and _cos(table, ids, targets) > 0.99
    assert record.losses[0] > record.losses[-1] and len(record.losses) == 10 and record.sentences == 400
    np.testing.assert_array_equal(table[-10:], start[-10:])  # no sentence has them
    again, _ = fit_vectors(start, ids, targets, epochs=10, lr=0.5)
    np.testing.assert_array_equal(table, again)  # deterministic for a seed
    np.testing.assert_array_equal(start, _toy()[0])  # the input table is not modified


def test_fit_skips_empty_sentences_and_refuses_what_it_cannot_fit():
    start, ids, targets = _toy(n=20)
    _, record = fit_vectors(start, ids + [[]], np.vstack([targets, targets[:1]]), epochs=1)
    assert record.sentences == 20
    with pytest.raises(ValueError, match="targets"):
        fit_vectors(start, ids, targets[:5], epochs=1)
    with pytest.raises(ValueError, match=r"\(N, 384\)"):
        fit_vectors(start, ids, targets[:, :10], epochs=1)
    with pytest.raises(ValueError, match="no sentence"):
        fit_vectors(start, [[], []], targets[:2], epochs=1)


def test_corpus_is_distinct_captions_class_names_and_seeded_spans():
    caps = ["A dog runs on the beach .", "A dog runs on the beach .", "two kids", "  "]
    out = tower_corpus(caps, ["tench, Tinca tinca", "goldfish"])
    assert out == ["A dog runs on the beach .", "two kids", "tench", "Tinca tinca", "goldfish",
                   "a photo of a tench.", "a photo of a Tinca tinca.", "a photo of a goldfish."]
    spans = tower_corpus(caps, [], spans=3, seed=1)
    extra = spans[2:]
    assert extra and all(" ".join(s.split()) in "A dog runs on the beach" for s in extra)
    assert all(2 <= len(s.split()) <= 5 for s in extra)  # 2-8 words, never the whole caption
    assert tower_corpus(caps, [], spans=3, seed=1) == spans
    many = [f"caption {i}" for i in range(50)]
    sample = tower_corpus(many, [], limit=10, seed=0)
    assert len(sample) == 10 and set(sample) < set(many)
    assert sample == sorted(sample, key=many.index)  # kept in corpus order


def test_saved_tower_encodes_as_the_mean_of_its_rows_and_is_checked_on_load(enc, tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(enc.tokenizer), EMBED_DIM)).astype(np.float32)
    path = save_static(table, static_path(tmp_path, enc.identity), identity=enc.identity, info={"sentences": 3})
    assert path.name.startswith(f"minilm-static-v{STATIC_FORMAT}-") and path.suffix == ".safetensors"
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["sentences"] == 3 and meta["source"] == enc.identity and meta["kind"] == "static"
    tokenizer_file = enc.model_path / "tokenizer.json"
    tower = load_static(path, tokenizer_file, identity=enc.identity)
    texts = ["A Brown dog runs along the beach", "zebras"]
    got = tower.encode(texts)
    want = _unit(np.stack([table[i].mean(0) for i in token_ids(enc.tokenizer, texts)]))
    assert got.shape == (2, EMBED_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(tower.encode([texts[0]]), got[:1], atol=1e-6)  # batch-independent
    assert tower.encode([]).shape == (0, EMBED_DIM)
    with pytest.raises(TypeError):
        tower.encode("a string")

    with pytest.raises(StaticTowerError, match="built for"):
        load_static(path, tokenizer_file, identity="another encoder")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(StaticTowerError, match="checksum"):
        load_static(path, tokenizer_file, identity=enc.identity)
    with pytest.raises(StaticTowerError, match="build_query_encoder"):
        load_static(tmp_path / "absent.safetensors", tokenizer_file, identity=enc.identity)


def test_a_table_that_does_not_fit_the_tokenizer_or_is_not_finite_is_refused(enc, tmp_path):
    small = np.zeros((10, EMBED_DIM), np.float32)
    path = save_static(small, tmp_path / "small.safetensors", identity=enc.identity, info={})
    with pytest.raises(StaticTowerError, match="rows"):
        load_static(path, enc.model_path / "tokenizer.json", identity=enc.identity)
    bad = np.full((10, EMBED_DIM), np.nan, np.float32)
    with pytest.raises(ValueError, match="finite"):
        save_static(bad, tmp_path / "bad.safetensors", identity=enc.identity, info={})
    assert not (tmp_path / "bad.safetensors").exists()
