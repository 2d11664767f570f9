"""Tests for training/ml/caption_metrics.py against hand-computed and brute-force references."""

from __future__ import annotations

import math
import os
import random
from collections import Counter

import pytest

from training.ml.caption_metrics import (
    MetricUnavailable,
    caption_scores,
    java_available,
    ptb_tokenize,
)


def _need_java() -> None:
    """Skip without Java, except under CI=true where Java is part of the environment."""
    if java_available():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Java 17 is required under CI for PTB tokenization and METEOR")
    pytest.skip("Java not found on PATH: PTB tokenizer and METEOR cannot run")


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def brute_force_bleu(hyps: list[str], refs: list[list[str]], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..max_n (x100), closest reference length, as in Papineni et al. 2002."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, rs in zip(hyps, refs):
        h = hyp.split()
        rws = [r.split() for r in rs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rws)[1]
        for n in range(1, max_n + 1):
            hc = _ngrams(h, n)
            best: Counter[tuple[str, ...]] = Counter()
            for r in rws:
                best |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    out, log_sum = [], 0.0
    for n in range(max_n):
        # pycocoevalcap smooths with tiny constants; zero matches give ~1e-15-scale precisions.
        p = (matches[n] + 1e-15) / (totals[n] + 1e-9)
        log_sum += math.log(p)
        out.append(100.0 * bp * math.exp(log_sum / (n + 1)))
    return out


def brute_force_cider_d(hyps: list[str], refs: list[list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015): clipped tf-idf cosine, Gaussian length penalty, x10."""
    num_images = len(hyps)
    df: Counter[tuple[str, ...]] = Counter()
    for rs in refs:
        df.update({g for r in rs for n in range(1, 5) for g in _ngrams(r.split(), n)})

    def vec(words: list[str], n: int) -> dict[tuple[str, ...], float]:
        return {g: c * math.log(num_images / max(1.0, df[g])) for g, c in _ngrams(words, n).items()}

    total = 0.0
    for hyp, rs in zip(hyps, refs):
        h = hyp.split()
        per_n = []
        for n in range(1, 5):
            vh = vec(h, n)
            acc = 0.0
            for r in rs:
                rw = r.split()
                vr = vec(rw, n)
                num = sum(min(v, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, v in vh.items())
                nh = math.sqrt(sum(v * v for v in vh.values()))
                nr = math.sqrt(sum(v * v for v in vr.values()))
                cos = num / (nh * nr) if nh and nr else num
                acc += cos * math.exp(-((len(h) - len(rw)) ** 2) / (2 * sigma**2))
            per_n.append(acc / len(rs))
        total += 10.0 * sum(per_n) / 4
    return 100.0 * total / num_images


def test_identical_hypothesis_and_reference_give_bleu_4_of_100() -> None:
    hyps = {"a": "a dog runs on the grass", "b": "two men play ball in a park"}
    refs = {k: [v] for k, v in hyps.items()}
    scores = caption_scores(hyps, refs, tokenizer="simple", meteor=False)
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(100.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(100.0)


def test_bleu_1_applies_brevity_penalty_hand_computed() -> None:
    # 3 hypothesis words, all matching; closest reference has 6 words -> BP = exp(1 - 6/3).
    scores = caption_scores({0: "the cat sat"}, {0: ["the cat sat on the mat"]},
                            tokenizer="simple", meteor=False)
    assert scores["bleu_1"] == pytest.approx(100.0 * math.exp(-1.0), rel=1e-6)


def test_bleu_uses_closest_reference_length_and_clipped_counts() -> None:
    # "the the the the": clipped unigram matches = 2 (max count of "the" in a reference) of 4.
    # Closest reference lengths are 3 and 5 (tie at distance 1 -> shorter, 3), so no penalty.
    scores = caption_scores({0: "the the the the"}, {0: ["the cat the", "a b c d e the the"]},
                            tokenizer="simple", meteor=False)
    assert scores["bleu_1"] == pytest.approx(50.0, rel=1e-6)


def test_bleu_and_cider_d_match_brute_force_on_random_corpus() -> None:
    rng = random.Random(7)
    words = "a dog man runs jumps in the water grass red ball two boys play".split()
    hyps, refs = [], []
    for _ in range(12):
        hyps.append(" ".join(rng.choices(words, k=rng.randint(1, 9))))
        refs.append([" ".join(rng.choices(words, k=rng.randint(2, 10))) for _ in range(rng.randint(1, 5))])
    scores = caption_scores(dict(enumerate(hyps)), dict(enumerate(refs)), tokenizer="simple", meteor=False)
    expected_bleu = brute_force_bleu(hyps, refs)
    for n in range(4):
        assert scores[f"bleu_{n + 1}"] == pytest.approx(expected_bleu[n], rel=1e-6, abs=1e-9)
    assert scores["cider_d"] == pytest.approx(brute_force_cider_d(hyps, refs), rel=1e-6)


def test_cider_d_is_higher_for_the_matching_caption() -> None:
    refs = {0: ["a dog runs on the grass", "a brown dog running"], 1: ["a man rides a bike", "a cyclist on a road"]}
    good = caption_scores({0: "a dog runs", 1: "a man rides a bike"}, refs, tokenizer="simple", meteor=False)
    bad = caption_scores({0: "a man rides a bike", 1: "a dog runs"}, refs, tokenizer="simple", meteor=False)
    assert good["cider_d"] > bad["cider_d"]
    assert good["bleu_4"] > bad["bleu_4"]


def test_extra_reference_keys_are_ignored_and_missing_ones_raise() -> None:
    refs = {0: ["a dog runs"], 1: ["a cat sleeps"], 2: ["two birds fly"]}
    scores = caption_scores({0: "a dog runs", 1: "a cat sleeps"}, refs, tokenizer="simple", meteor=False)
    assert scores["bleu_1"] == pytest.approx(100.0, abs=1e-6)
    with pytest.raises(ValueError, match="no references"):
        caption_scores({5: "a dog"}, refs, tokenizer="simple", meteor=False)
    with pytest.raises(ValueError, match="tokenizer"):
        caption_scores({0: "a dog"}, refs, tokenizer="nltk", meteor=False)  # type: ignore[arg-type]


def test_ptb_tokenizer_lowercases_splits_clitics_and_drops_punctuation() -> None:
    _need_java()
    assert ptb_tokenize(["A dog's T-shirt, running.", "Two men  play ; ball !"]) == [
        "a dog 's t-shirt running",
        "two men play ball",
    ]


def test_ptb_and_simple_tokenizers_agree_on_plain_captions() -> None:
    _need_java()
    hyps = {0: "A dog runs on the grass .", 1: "Two men, playing ball!"}
    refs = {0: ["A dog is running on the grass ."], 1: ["Two men are playing ball ."]}
    ptb = caption_scores(hyps, refs, tokenizer="ptb", meteor=False)
    simple = caption_scores(hyps, refs, tokenizer="simple", meteor=False)
    assert ptb == pytest.approx(simple)


def test_meteor_runs_and_ranks_identical_above_unrelated() -> None:
    _need_java()
    refs = {0: ["a dog runs on the grass"], 1: ["a man rides a red bike"]}
    # One JVM start (~10 s) for both systems: score them as four "images".
    both_refs = {0: refs[0], 1: refs[1], 2: refs[0], 3: refs[1]}
    hyps = {0: "a dog runs on the grass", 1: "a man rides a red bike", 2: "two birds", 3: "snow falls"}
    scores = caption_scores(hyps, both_refs, tokenizer="ptb", meteor=True)
    assert set(scores) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d"}
    assert 0.0 < scores["meteor"] < 100.0
    # Corpus METEOR of half-perfect, half-unrelated output lies near 50 (fragmentation penalty
    # keeps a perfect single-chunk match just under 100).
    assert 40.0 < scores["meteor"] < 60.0


def test_missing_java_raises_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MetricUnavailable):
        caption_scores({0: "a dog"}, {0: ["a dog"]}, tokenizer="ptb", meteor=False)
    with pytest.raises(MetricUnavailable):
        caption_scores({0: "a dog"}, {0: ["a dog"]}, tokenizer="simple", meteor=True)
