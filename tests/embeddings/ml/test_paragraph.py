"""embeddings/ml/paragraph.py and paragraph_io.py: real gensim Doc2Vec models on a tiny corpus."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings.ml.checkpoint import CheckpointError, CorruptCheckpoint, IncompatibleCheckpoint
from embeddings.ml.paragraph import (SOURCE_MAPPED, SOURCE_TRAINED, ParagraphConfig, ParagraphSpace, document_text,
                                     fit_image_map, hubness, tokenize, train_paragraph_vectors)
from embeddings.ml.paragraph_io import ParagraphIndex, load_paragraph, save_paragraph

DOCS = [
    "a brown dog runs along the sandy beach with a stick",
    "two children build a snowman in the snow near a pine tree",
    "a man in a helmet rides a red bike down a steep street",
    "a black cat sleeps on a sofa beside a window",
    "people walk through a busy city market at night",
    "a girl in a pink dress jumps on a trampoline in the garden",
    "a surfer rides a big wave in the blue ocean",
    "an old woman feeds pigeons in a park with a fountain",
]
# Tiny corpus: no frequent-word down-sampling (it would drop most of 8 short documents), every word kept.
TINY = dict(vector_size=16, window=3, min_count=1, sample=0.0, image_dim=12)


def train(mode: str = "both", seed: int = 0, epochs: int = 150):
    return train_paragraph_vectors(DOCS, ParagraphConfig(mode=mode, **TINY), epochs=epochs, seed=seed)


@pytest.mark.parametrize("mode", ["dm", "dbow", "both"])
def test_inferred_vector_of_a_training_document_is_nearest_to_its_trained_vector(mode):
    pv = train(mode)
    docvecs, inferred = pv.docvecs(), pv.infer(DOCS)
    assert docvecs.shape == inferred.shape == (len(DOCS), pv.dim) == (len(DOCS), 16 * len(pv.config.modes))
    assert np.allclose(np.linalg.norm(inferred, axis=1), 1.0, atol=1e-5)
    assert list((inferred @ docvecs.T).argmax(axis=1)) == list(range(len(DOCS)))


def test_inference_with_a_fixed_seed_is_repeatable():
    pv = train()
    first, again = pv.infer([DOCS[2]]), pv.infer([DOCS[2]])
    assert np.array_equal(first, again)  # the generator is reseeded before every inference
    other_seed = train(seed=1).infer([DOCS[2]])
    assert not np.array_equal(first, other_seed)


def test_inference_is_stable_after_a_save_and_load(tmp_path):
    pv = train()
    index = _index(pv)
    files = save_paragraph(tmp_path / "model", index)
    loaded = load_paragraph(tmp_path / "model", expected_files=files)
    before, after = pv.infer(DOCS), loaded.vectors_model.infer(DOCS)
    assert float(np.min(np.sum(before * after, axis=1))) > 0.99
    assert np.array_equal(loaded.image_ids, index.image_ids) and np.array_equal(loaded.vectors, index.vectors)
    assert np.array_equal(loaded.space.center, index.space.center) and loaded.mapped_offset == index.mapped_offset
    assert loaded.position(int(index.image_ids[3])) == 3 and loaded.position(10_000) is None


def test_cancel_between_epochs_returns_nothing():
    calls = []
    result = train_paragraph_vectors(DOCS, ParagraphConfig(mode="dm", **TINY), epochs=5,
                                     on_epoch=lambda e, m, a: calls.append((e, m)),
                                     should_stop=lambda: len(calls) >= 2)
    assert result is None and calls == [(1, "dm"), (2, "dm")]


def test_epoch_callback_reports_each_pass_and_the_learning_rate_falls():
    seen = []
    train_paragraph_vectors(DOCS, ParagraphConfig(mode="both", **TINY), epochs=3, alpha=0.03, min_alpha=0.0003,
                            on_epoch=lambda e, m, a: seen.append((e, m, a)))
    assert [(e, m) for e, m, _ in seen] == [(1, "dm"), (2, "dm"), (3, "dm"), (1, "dbow"), (2, "dbow"), (3, "dbow")]
    assert seen[0][2] > seen[1][2] > seen[2][2] == pytest.approx(0.0003)


def test_bad_config_and_empty_corpus_are_refused():
    with pytest.raises(ValueError):
        ParagraphConfig(mode="pv")
    with pytest.raises(ValueError):
        ParagraphConfig(vector_size=0)
    with pytest.raises(ValueError, match="no words"):
        train_paragraph_vectors(["", "   "], ParagraphConfig(**TINY), epochs=1)


def test_image_map_matches_the_closed_form_reference():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((40, 12)).astype(np.float32)
    targets = rng.standard_normal((40, 5))
    image_map = fit_image_map(feats, targets, ridge=0.5)
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    xa = np.hstack([x, np.ones((40, 1))])
    penalty = np.diag([0.5] * 12 + [0.0])  # the bias is not penalised
    ref = np.linalg.solve(xa.T @ xa + penalty, xa.T @ targets)
    assert np.allclose(image_map.weight, ref[:12], atol=1e-4) and np.allclose(image_map.bias, ref[12], atol=1e-4)
    out = image_map(feats)
    expected = (xa @ ref) / np.linalg.norm(xa @ ref, axis=1, keepdims=True)
    assert np.allclose(out, expected, atol=1e-4)


def test_tokenize_and_document_text():
    assert tokenize("A Dog, running -- on the Beach!") == ["a", "dog", "running", "on", "the", "beach"]
    assert document_text([" a dog ", "", "a cat"]) == "a dog a cat"


def _index(pv, offset: float = 0.0) -> ParagraphIndex:
    rng = np.random.default_rng(1)
    space = ParagraphSpace.of(pv.docvecs())
    image_map = fit_image_map(rng.standard_normal((len(DOCS), 12)), space(pv.docvecs()), ridge=1.0)
    ids = np.arange(100, 100 + len(DOCS), dtype=np.int64)  # document i is image 100 + i
    source = np.full(len(DOCS), SOURCE_TRAINED, np.uint8)
    source[7] = SOURCE_MAPPED  # image 107
    rev = slice(None, None, -1)  # given in reverse: the index sorts by id, moving vectors along
    return ParagraphIndex(pv, space, image_map, ids[rev].copy(), space(pv.docvecs())[rev].copy(), source[rev].copy(),
                          mapped_offset=offset, meta={"collection_ids": [1]})


def test_space_is_centred_and_hubness_matches_a_loop():
    rng = np.random.default_rng(2)
    docs = rng.standard_normal((6, 4)).astype(np.float32) + 3.0
    space = ParagraphSpace.of(docs)
    out = space(docs)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6) and np.allclose(space.center, docs.mean(0))
    ref = [np.mean(sorted(out @ v)[-2:]) for v in out]
    assert np.allclose(hubness(out, out, k=2), ref, atol=1e-6)


def test_mapped_images_are_scored_lower_by_the_offset():
    pv = train()
    plain, lowered = _index(pv), _index(pv, offset=0.25)
    query = plain.encode([DOCS[7]])[0]
    top = dict((i, s) for i, s, _ in plain.search(query, plain.image_ids, 8))
    low = dict((i, s) for i, s, _ in lowered.search(query, lowered.image_ids, 8))
    assert low[107] == pytest.approx(top[107] - 0.25) and low[100] == pytest.approx(top[100])


def test_search_ranks_allowed_ids_only_against_brute_force():
    pv = train()
    index = _index(pv)
    query = index.encode([DOCS[1]])[0]
    allowed = index.image_ids[[0, 1, 2, 5]]
    hits = index.search(query, allowed, 3)
    scores = index.vectors @ query
    ref = sorted(((int(index.image_ids[i]), float(scores[i])) for i in [0, 1, 2, 5]), key=lambda t: -t[1])[:3]
    assert [(i, round(s, 5)) for i, s, _ in hits] == [(i, round(s, 5)) for i, s in ref]
    assert hits[0][0] == 101 and index.source[index.position(107)] == SOURCE_MAPPED
    assert index.search(query, np.array([], np.int64), 3) == []
    assert list(index.image_ids) == sorted(index.image_ids)  # vectors moved with their ids
    assert np.allclose(index.vectors[index.position(103)], index.space(pv.docvecs())[3])


def test_a_tampered_file_is_refused_before_it_is_unpickled(tmp_path):
    pv = train("dm")
    files = save_paragraph(tmp_path / "model", _index(pv))
    assert not (tmp_path / "model.part").exists()
    model_file = tmp_path / "model" / "doc2vec-dm.model"
    model_file.write_bytes(model_file.read_bytes() + b"x")
    with pytest.raises(CorruptCheckpoint, match="sha256"):
        load_paragraph(tmp_path / "model")
    # a file rewritten with a matching manifest is still not the one the database recorded
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    import hashlib
    manifest["files"]["doc2vec-dm.model"] = hashlib.sha256(model_file.read_bytes()).hexdigest()
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptCheckpoint, match="recorded"):
        load_paragraph(tmp_path / "model", expected_files=files)


def test_another_format_version_or_no_folder_is_refused(tmp_path):
    save_paragraph(tmp_path / "model", _index(train("dbow")))
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleCheckpoint, match="format version"):
        load_paragraph(tmp_path / "model")
    with pytest.raises(CheckpointError):
        load_paragraph(tmp_path / "missing")


def test_saving_again_replaces_the_whole_folder(tmp_path):
    save_paragraph(tmp_path / "model", _index(train("both")))
    files = save_paragraph(tmp_path / "model", _index(train("dm")))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(files)
    assert "doc2vec-dbow.model" not in files and load_paragraph(tmp_path / "model").vectors_model.config.mode == "dm"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_with_a_matching_manifest_is_never_unpickled_when_the_database_digests_are_given(tmp_path):
    import hashlib
    import pickle

    files = save_paragraph(tmp_path / "model", _index(train("dbow")))
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(str(marker)))
    (tmp_path / "model" / "doc2vec-dbow.model").write_bytes(evil)
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    manifest["files"]["doc2vec-dbow.model"] = hashlib.sha256(evil).hexdigest()  # the attacker fixed the manifest
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
    for expected in (files, {}):  # the recorded digests; no record at all refuses everything
        with pytest.raises(CorruptCheckpoint):
            load_paragraph(tmp_path / "model", expected_files=expected)
    assert not marker.exists()
