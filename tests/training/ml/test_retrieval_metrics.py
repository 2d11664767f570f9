"""Tests for training/ml/retrieval_metrics.py against hand-computed and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.ml.retrieval_metrics import recalls_from_ranks, retrieval_metrics, retrieval_ranks


def _pessimistic_rank(scores: list[float], right: set[int]) -> int:
    """Sort by score descending, wrong items first on ties; 1-based position of the first right one."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j in right))
    return 1 + next(pos for pos, j in enumerate(order) if j in right)


def _reference_ranks(images: np.ndarray, texts: np.ndarray, owner: list[int]) -> tuple[list, list]:
    n, m = len(images), len(texts)
    sim = [[float(sum(a * b for a, b in zip(texts[t], images[i]))) for i in range(n)] for t in range(m)]
    t2i = [_pessimistic_rank(sim[t], {owner[t]}) for t in range(m)]
    i2t = [
        _pessimistic_rank([sim[t][i] for t in range(m)], {t for t in range(m) if owner[t] == i})
        for i in range(n)
    ]
    return i2t, t2i


@st.composite
def _cases(draw):
    # Entries on a coarse grid (multiples of 1/2) make dot products exact and ties common.
    n = draw(st.integers(1, 6))
    d = draw(st.integers(1, 4))
    owner = list(range(n)) + draw(st.lists(st.integers(0, n - 1), max_size=12))
    owner = draw(st.permutations(owner))
    grid = st.integers(-2, 2).map(lambda v: v / 2)
    images = np.array(draw(st.lists(st.lists(grid, min_size=d, max_size=d), min_size=n, max_size=n)))
    texts = np.array(
        draw(st.lists(st.lists(grid, min_size=d, max_size=d), min_size=len(owner), max_size=len(owner)))
    )
    return images.astype(np.float32), texts.astype(np.float32), np.array(owner, dtype=np.int64)


@settings(max_examples=300, deadline=None)
@given(_cases(), st.integers(1, 5))
def test_ranks_match_brute_force_reference_with_ties(case, chunk_size):
    images, texts, owner = case
    i2t, t2i = retrieval_ranks(images, texts, owner, chunk_size=chunk_size)
    ref_i2t, ref_t2i = _reference_ranks(images, texts, owner.tolist())
    assert i2t.tolist() == ref_i2t
    assert t2i.tolist() == ref_t2i


def test_hand_computed_case():
    # Images e0, e1, e2 (unit axes); image 0 has captions 0,1; image 1 has 2,3; image 2 has 4.
    images = np.eye(3, dtype=np.float32)
    texts = np.array(
        [
            [0.9, 0.1, 0.0],  # t0 -> image 0 first: rank 1
            [0.1, 0.9, 0.0],  # t1 (image 0) prefers image 1: rank 2
            [0.0, 0.2, 0.8],  # t2 (image 1): image 2 (0.8) above image 1 (0.2): rank 2
            [0.3, 0.3, 0.3],  # t3 (image 1): all tied -> counts against: rank 3
            [0.5, 0.0, 0.1],  # t4 (image 2): images 0 (0.5) and 2 (0.1) above 1 (0.0): rank 2
        ],
        dtype=np.float32,
    )
    owner = np.array([0, 0, 1, 1, 2])
    i2t, t2i = retrieval_ranks(images, texts, owner)
    assert t2i.tolist() == [1, 2, 2, 3, 2]
    # Image 0 column: [.9,.1,0,.3,.5] best own .9 -> rank 1.
    # Image 1 column: [.1,.9,.2,.3,0] best own .3 (t3); wrong t1 .9 above -> rank 2.
    # Image 2 column: [0,0,.8,.3,.1] best own .1 (t4); wrong t2 .8, t3 .3 above -> rank 3.
    assert i2t.tolist() == [1, 2, 3]
    m = retrieval_metrics(images, texts, owner)
    assert m["t2i_r1"] == pytest.approx(20.0)
    assert m["t2i_r5"] == pytest.approx(100.0)
    assert m["i2t_r1"] == pytest.approx(100.0 / 3)
    assert m["t2i_medr"] == 2.0
    assert m["i2t_medr"] == 2.0
    expected_rsum = 100.0 / 3 + 100 + 100 + 20 + 100 + 100
    assert m["rsum"] == pytest.approx(expected_rsum)
    assert set(m) == {
        "i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr",
        "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "rsum",
    }


def test_collapsed_vectors_get_worst_rank_not_perfect_recall():
    # Every image and caption maps to the same vector: nothing is retrievable.
    n_images, per_image = 12, 5
    images = np.ones((n_images, 4), dtype=np.float32) / 2
    texts = np.ones((n_images * per_image, 4), dtype=np.float32) / 2
    owner = np.repeat(np.arange(n_images), per_image)
    i2t, t2i = retrieval_ranks(images, texts, owner)
    assert (t2i == n_images).all()
    # All 60 captions tie; the 55 wrong ones rank ahead of the image's 5.
    assert (i2t == 1 + n_images * per_image - per_image).all()
    m = retrieval_metrics(images, texts, owner)
    assert m["t2i_r10"] == 0.0 and m["i2t_r10"] == 0.0


def test_duplicate_image_does_not_share_the_right_answer():
    # Image 1 duplicates image 0: caption of image 0 must rank 2, not 1.
    images = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    owner = np.array([0, 1, 2])
    i2t, t2i = retrieval_ranks(images, texts, owner)
    assert t2i.tolist() == [2, 2, 1]
    assert i2t.tolist() == [2, 2, 1]


def test_own_captions_tied_with_each_other_do_not_hurt():
    images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    owner = np.array([0, 0, 1])
    i2t, _ = retrieval_ranks(images, texts, owner)
    assert i2t.tolist() == [1, 1]


def test_perfect_alignment_gives_full_recall_on_random_unit_vectors():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(50, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    owner = np.repeat(np.arange(50), 5)
    texts = images[owner] + 0.01 * rng.normal(size=(250, 16)).astype(np.float32)
    m = retrieval_metrics(images, texts, owner)
    assert m["t2i_r1"] == 100.0 and m["i2t_r1"] == 100.0
    assert m["t2i_medr"] == 1.0 and m["rsum"] == 600.0


def test_result_does_not_depend_on_chunk_size_or_dtype():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(40, 8)).astype(np.float32)
    owner = rng.permutation(np.repeat(np.arange(40), 3))
    texts = rng.normal(size=(120, 8)).astype(np.float32)
    base = retrieval_metrics(images, texts, owner)
    assert retrieval_metrics(images, texts, owner, chunk_size=7) == base
    assert retrieval_metrics(images.astype(np.float64), texts, owner, chunk_size=1000) == base


def test_medr_uses_floor_of_median_rank():
    assert recalls_from_ranks(np.array([1, 2, 3, 4]), "x")["x_medr"] == 2.0
    assert recalls_from_ranks(np.array([1, 10, 12]), "x")["x_medr"] == 10.0


@pytest.mark.parametrize(
    "images, texts, owner, message",
    [
        (np.eye(2), np.eye(3), np.array([0, 1, 1]), "dimension"),
        (np.eye(2), np.eye(2), np.array([0, 0]), "at least one caption"),
        (np.eye(2), np.eye(2), np.array([0, 2]), "indices"),
        (np.eye(2), np.eye(2), np.array([0.0, 1.0]), "integer"),
        (np.eye(2), np.eye(2), np.array([0]), "shape"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), np.eye(2), np.array([0, 1]), "NaN"),
    ],
)
def test_invalid_inputs_raise_value_error(images, texts, owner, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(images, texts, owner)
