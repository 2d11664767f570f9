"""Tests for embeddings/ml/conse.py against hand-computed references."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.ml.conse import (
    class_vectors,
    conse_image_vectors,
    conse_weights,
    default_class_names_path,
    load_class_names,
)
from tests.embeddings.ml.flickr8k_data import FLICKR8K


def test_bundled_class_list_has_the_1000_imagenet_classes_in_index_order():
    names = load_class_names()
    assert len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[-1] == "toilet tissue"
    assert names[134] == names[517] == "crane"  # the documented duplicate
    shared = FLICKR8K.parent / "imagenet" / "imagenet_classes.txt"
    if shared.is_file():
        assert default_class_names_path().read_bytes() == shared.read_bytes()


def test_weights_keep_the_top_k_softmax_probabilities_renormalised():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))  # softmax gives back these probs
    w = conse_weights(logits, k=2, temperature=1.0)
    assert w[0] == pytest.approx([0.625, 0.375, 0.0, 0.0])
    assert conse_weights(logits, k=4, temperature=1.0)[0] == pytest.approx([0.5, 0.3, 0.15, 0.05])
    assert conse_weights(logits, k=1, temperature=1.0)[0] == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_temperature_flattens_the_distribution():
    logits = np.log(np.array([[0.8, 0.2]]))
    w = conse_weights(logits, k=2, temperature=2.0)
    expected = np.sqrt([0.8, 0.2]) / np.sqrt([0.8, 0.2]).sum()
    assert w[0] == pytest.approx(expected)


def test_image_vector_is_the_normalised_convex_mix_of_class_vectors():
    class_vecs = np.eye(3, dtype=np.float32)  # class c -> axis c
    logits = np.log(np.array([[0.6, 0.1, 0.3], [0.2, 0.7, 0.1]]))
    out = conse_image_vectors(logits, class_vecs, k=2, temperature=1.0)
    first = np.array([0.6, 0.0, 0.3]) / np.linalg.norm([0.6, 0.0, 0.3])
    second = np.array([0.2, 0.7, 0.0]) / np.linalg.norm([0.2, 0.7, 0.0])
    assert out.dtype == np.float32
    assert np.allclose(out, [first, second], atol=1e-6)
    assert np.allclose(conse_image_vectors(logits, class_vecs, k=1), [[1, 0, 0], [0, 1, 0]])


def test_class_vectors_average_prompts_and_normalise():
    calls = []

    def fake_encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        # vector = (len(text), 1): distinct per prompt, not unit length
        return np.array([[len(t), 1.0] for t in texts])

    vecs = class_vectors(["ox", "yak"], fake_encode, prompts=("{}", "a {} !"))
    assert calls == [["ox", "yak"], ["a ox !", "a yak !"]]

    def unit(v):
        return np.asarray(v, float) / np.linalg.norm(v)

    expected_ox = unit(unit([2, 1]) + unit([6, 1]))
    assert np.allclose(vecs[0], expected_ox, atol=1e-6)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": 5}, {"temperature": 0.0}])
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        conse_image_vectors(np.zeros((1, 4)), np.eye(4), **{"k": 2, **kwargs})


def test_prompts_need_exactly_one_placeholder():
    with pytest.raises(ValueError):
        class_vectors(["ox"], lambda t: np.ones((len(t), 2)), prompts=("a photo",))
