"""CIDEr-D as a per-caption reward, with document frequencies fixed once (self-critical training).

``pycocoevalcap``'s ``CiderScorer`` recomputes the document frequencies and every reference
vector on each call, from the references of the captions it is given. That is right for an
evaluation, but a reward needs the frequencies of the TRAINING corpus, fixed for the whole run
(Rennie et al. 2017; ruotianluo/self-critical.pytorch builds them once, ``coco-train-idxs``),
and it is called on every batch. ``CiderD`` here cooks the training references once, keeps each
image's reference tf-idf vectors, norms and lengths, and then scores a hypothesis against them
with the same arithmetic as pycocoevalcap's ``CiderScorer.compute_cider`` (clipped n-gram
weights, Gaussian length penalty with sigma 6, mean over n = 1..4, mean over references, x10;
"length" counts bigrams there, which only shifts both sides of the length difference alike), so
with the same frequencies the two agree to rounding (tests/training/ml/test_cider_reward.py).

Scores are on pycocoevalcap's raw scale (0.55, not 55). Pure: no Django.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from pycocoevalcap.cider.cider_scorer import precook

_N = 4
_SIGMA = 6.0

Vec = tuple[list[dict[tuple[str, ...], float]], list[float], int]  # per-n weights, per-n norms, length


class CiderD:
    """CIDEr-D of hypotheses against the references of one image each, df from ``corpus``.

    ``corpus`` is one list of tokenized reference sentences (words joined by spaces) per image;
    image ``i`` of ``score`` indexes it. Every reference list must be non-empty.
    """

    def __init__(self, corpus: Sequence[Sequence[str]]) -> None:
        if not corpus or any(len(refs) == 0 for refs in corpus):
            raise ValueError("CIDEr-D needs at least one image and one reference per image")
        cooked = [[precook(ref, _N) for ref in refs] for refs in corpus]
        df: dict[tuple[str, ...], float] = defaultdict(float)
        for refs in cooked:
            for ngram in {g for ref in refs for g in ref}:
                df[ngram] += 1.0
        self._log_df = {g: math.log(max(1.0, c)) for g, c in df.items()}
        self._ref_len = math.log(float(len(cooked)))  # log of the number of "documents" (images)
        self._refs: list[list[Vec]] = [[self._vec(ref) for ref in refs] for refs in cooked]

    @property
    def num_images(self) -> int:
        return len(self._refs)

    def _vec(self, counts: dict[tuple[str, ...], int]) -> Vec:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(_N)]
        norm = [0.0] * _N
        length = 0
        for ngram, tf in counts.items():
            n = len(ngram) - 1
            w = float(tf) * (self._ref_len - self._log_df.get(ngram, 0.0))
            vec[n][ngram] = w
            norm[n] += w * w
            if n == 1:  # as pycocoevalcap: "length" is the bigram count
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, hypotheses: Sequence[str], images: Sequence[int]) -> list[float]:
        """CIDEr-D of each tokenized hypothesis against the references of ``images[i]``."""
        if len(hypotheses) != len(images):
            raise ValueError(f"{len(hypotheses)} hypotheses for {len(images)} images")
        out = []
        for hyp, image in zip(hypotheses, images):
            vec, norm, length = self._vec(precook(hyp, _N))
            refs = self._refs[image]
            total = 0.0
            for vec_r, norm_r, length_r in refs:
                penalty = math.exp(-((length - length_r) ** 2) / (2 * _SIGMA**2))
                for n in range(_N):
                    ref_n = vec_r[n]
                    val = sum(min(w, ref_n.get(g, 0.0)) * ref_n.get(g, 0.0) for g, w in vec[n].items())
                    if norm[n] != 0 and norm_r[n] != 0:
                        val /= norm[n] * norm_r[n]
                    total += val * penalty
            out.append(10.0 * total / _N / len(refs))
        return out
