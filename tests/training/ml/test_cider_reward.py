"""Tests for training/ml/cider_reward.py against pycocoevalcap's CIDEr-D (the reference)."""

from __future__ import annotations

import random

import pytest
from pycocoevalcap.cider.cider import Cider

from training.ml.cider_reward import CiderD


def _corpus(seed: int, n: int = 40) -> tuple[list[list[str]], list[str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(25)]
    refs = [[" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(rng.randint(1, 5))]
            for _ in range(n)]
    hyps = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(n)]
    return refs, hyps


def test_matches_pycocoevalcap_when_the_frequencies_come_from_the_same_references() -> None:
    refs, hyps = _corpus(1)
    _, expected = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    got = CiderD(refs).score(hyps, list(range(len(refs))))
    assert got == pytest.approx(list(expected), abs=1e-12)
    assert max(got) > 0.1  # not a trivial all-zero agreement


def test_frequencies_stay_those_of_the_corpus_when_scoring_a_few_images() -> None:
    refs, hyps = _corpus(2)
    scorer = CiderD(refs)
    full = scorer.score(hyps, list(range(len(refs))))
    # One image at a time gives the same scores: the document frequencies are the corpus's.
    assert [scorer.score([h], [i])[0] for i, h in enumerate(hyps)] == pytest.approx(full)
    # pycocoevalcap on just those images would use their own frequencies, hence other scores.
    _, subset = Cider().compute_score({i: refs[i] for i in range(3)}, {i: [hyps[i]] for i in range(3)})
    assert list(subset) != pytest.approx(full[:3])


def test_a_reference_scores_higher_than_an_unrelated_caption() -> None:
    scorer = CiderD([["a dog runs on the grass", "a brown dog running"], ["two men play soccer"]])
    good, bad = scorer.score(["a dog runs on the grass", "two men play soccer"], [0, 0])
    assert good > 1.0 > bad >= 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        CiderD([])
    with pytest.raises(ValueError):
        CiderD([["a dog"], []])
    with pytest.raises(ValueError):
        CiderD([["a dog"]]).score(["a dog"], [0, 0])
