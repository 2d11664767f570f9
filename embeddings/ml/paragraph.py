"""Paragraph vectors (Le & Mikolov 2014) on gensim's Doc2Vec, plus a linear image map. Pure.

One document per image: its captions (or a long description) joined. Two models of the
paper, each a gensim ``Doc2Vec``:

- PV-DM (``dm=1``): the paragraph vector and the mean of the context word vectors predict the
  next word;
- PV-DBOW (``dm=0``): the paragraph vector alone predicts words sampled from the paragraph.

``mode="both"`` trains both and concatenates their unit vectors (the paper's recommendation),
scaled by 1/sqrt(2) so the result is a unit vector again. A text that was not trained (a
query, a new image's captions) gets its vector by gensim's ``infer_vector``: gradient steps on
a fresh paragraph vector with the word and output weights frozen.

Images are ranked in a ``ParagraphSpace``: paragraph vectors minus the training documents'
mean, at unit length (the mean is a direction every document shares; removing it spreads the
space out). Images without captions have no document: ``ImageMap`` is a DeViSE-style linear map
from the frozen image encoder's pooled features (1280) into that space, fitted in closed form
(ridge regression onto the trained documents), so every image can be searched by a paragraph.
Its vectors are a weaker source than a real document and are labelled so (``SOURCE_MAPPED``).
Ridge predictions shrink toward the average document, so mapped vectors are "hubs" that sit
close to every query (on Flickr8k dev they took the top hit for a third of description
queries in a mixed index); ``hubness`` measures that (the mean cosine to the k nearest training
documents, as CSLS does) and the index lowers mapped scores by the measured gap.

Training is one gensim ``train`` call per epoch with the learning rate stepped linearly by us,
so the caller gets a progress callback and a cancel check between epochs. With ``workers=1``
and a fixed seed, training is deterministic within a Python process (gensim seeds per-word
vectors from Python's salted ``hash``, so two processes differ slightly: see
``PYTHONHASHSEED``). ``infer`` reseeds the model's generator before every call, so the same
text gives the same vector in a process, and vectors across processes agree closely
(tests/embeddings/ml/test_paragraph.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from gensim.models.doc2vec import Doc2Vec, TaggedDocument
from gensim.utils import simple_preprocess

MODES = ("dm", "dbow")
SOURCE_TRAINED, SOURCE_INFERRED, SOURCE_MAPPED = 0, 1, 2  # how an image got its vector
SOURCE_NAMES = {SOURCE_TRAINED: "description", SOURCE_INFERRED: "description", SOURCE_MAPPED: "image"}


@dataclass(frozen=True)
class ParagraphConfig:
    """The paragraph-vector models and the image map. Epochs, learning rate and seed are the
    run's loop settings (TrainConfig.loop), passed to ``train_paragraph_vectors``."""

    mode: Literal["dm", "dbow", "both"] = "both"  # PV-DM, PV-DBOW, or both concatenated
    vector_size: int = 100  # per model; "both" gives 2 x vector_size
    window: int = 5  # PV-DM context words on each side (and skip-gram window with dbow_words)
    min_count: int = 2  # words seen fewer times are dropped from the vocabulary
    negative: int = 5  # negative samples per predicted word
    sample: float = 1e-3  # down-sampling of frequent words
    dm_mean: bool = True  # PV-DM averages its context (the sum otherwise)
    dbow_words: bool = False  # also train skip-gram word vectors in PV-DBOW (slower)
    infer_epochs: int = 0  # gradient passes of infer_vector; 0 = the training epochs
    map_ridge: float = 1.0  # ridge penalty of the image map (on L2-normalised features)
    image_dim: int = 1280  # pooled feature width of the image encoder the map reads
    workers: int = 1  # gensim threads; 1 keeps training deterministic (more = lock-free Hogwild SGD)

    def __post_init__(self) -> None:
        if self.mode not in ("dm", "dbow", "both"):
            raise ValueError("mode must be 'dm', 'dbow' or 'both'")
        for name in ("vector_size", "window", "min_count", "negative", "image_dim", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.infer_epochs < 0 or self.map_ridge < 0 or not 0 <= self.sample < 1:
            raise ValueError("infer_epochs and map_ridge must be >= 0, sample in [0, 1)")

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)

    @property
    def dim(self) -> int:
        return self.vector_size * len(self.modes)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens, accents stripped (gensim's simple_preprocess, 1-40 chars)."""
    return simple_preprocess(text or "", deacc=True, min_len=1, max_len=40)


def document_text(captions: Sequence[str]) -> str:
    """One image's document: its captions joined, in order."""
    return " ".join(c.strip() for c in captions if c and c.strip())


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


EpochFn = Callable[[int, str, float], None]  # (epoch 1-based, mode, alpha at the epoch's end)


@dataclass
class ParagraphVectors:
    """The trained models (one per mode) and their config; ``docvecs`` (N, dim) are the unit
    vectors of the training documents, in training order."""

    config: ParagraphConfig
    models: dict[str, Doc2Vec]
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dim(self) -> int:
        return self.config.dim

    def vocabulary(self) -> int:
        return len(next(iter(self.models.values())).wv)

    def knows(self, tokens: Sequence[str]) -> int:
        """How many of these tokens are in the vocabulary."""
        wv = next(iter(self.models.values())).wv
        return sum(1 for t in tokens if t in wv.key_to_index)

    def docvecs(self) -> np.ndarray:
        parts = [_unit(self.models[m].dv.vectors) for m in self.config.modes]
        return _combine(parts)

    def infer(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors of untrained texts (repeatable within a process)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        epochs = self.config.infer_epochs or None
        with self._lock:  # infer_vector advances the model's generator: one caller at a time
            for i, text in enumerate(texts):
                words = tokenize(text)
                parts = []
                for mode in self.config.modes:
                    model = self.models[mode]
                    model.random = np.random.RandomState(self.seed)  # same text -> same draws
                    parts.append(_unit(model.infer_vector(words, epochs=epochs)))
                out[i] = _combine([p[None] for p in parts])[0]
        return out


def _combine(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenated unit vectors, rescaled to unit length: (N, d) x m -> (N, m*d)."""
    return (np.concatenate(parts, axis=1) / math.sqrt(len(parts))).astype(np.float32)


def train_paragraph_vectors(documents: Sequence[str], config: ParagraphConfig, *, epochs: int,
                            alpha: float = 0.025, min_alpha: float = 1e-4, seed: int = 0,
                            on_epoch: EpochFn | None = None,
                            should_stop: Callable[[], bool] | None = None) -> ParagraphVectors | None:
    """Train one Doc2Vec per mode on ``documents`` (document i is tagged i). The learning rate
    falls linearly from ``alpha`` to ``min_alpha`` over each model's epochs. Returns None when
    ``should_stop()`` turned true between two epochs (nothing usable was finished)."""
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    corpus = [TaggedDocument(tokenize(d), [i]) for i, d in enumerate(documents)]
    if not any(doc.words for doc in corpus):
        raise ValueError("the documents contain no words")
    models: dict[str, Doc2Vec] = {}
    for mode in config.modes:
        model = Doc2Vec(vector_size=config.vector_size, dm=1 if mode == "dm" else 0, window=config.window,
                        min_count=config.min_count, negative=config.negative, hs=0, sample=config.sample,
                        dm_mean=1 if config.dm_mean else 0, dbow_words=1 if config.dbow_words else 0,
                        workers=config.workers, seed=seed, epochs=epochs, alpha=alpha, min_alpha=min_alpha)
        model.build_vocab(corpus)
        if len(model.wv) == 0:
            raise ValueError(f"no word occurs min_count={config.min_count} times")
        step = (alpha - min_alpha) / epochs
        for epoch in range(epochs):
            if should_stop is not None and should_stop():
                return None
            start, end = alpha - step * epoch, alpha - step * (epoch + 1)
            model.train(corpus, total_examples=len(corpus), epochs=1, start_alpha=start, end_alpha=end)
            if on_epoch is not None:
                on_epoch(epoch + 1, mode, end)
        # train() leaves its last call's settings on the model (epochs=1, the final alpha),
        # which infer_vector would then use: put the run's own back.
        model.alpha, model.min_alpha, model.epochs = alpha, min_alpha, epochs
        models[mode] = model
    return ParagraphVectors(config=config, models=models, seed=seed)


@dataclass(frozen=True)
class ImageMap:
    """x (N, F) pooled image features -> unit vectors (N, D) in the paragraph space:
    y = normalise(normalise(x) @ weight + bias), ``weight`` (F, D), ``bias`` (D,)."""

    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        x = _unit(np.asarray(feats, np.float32))
        return _unit(x @ self.weight + self.bias)


@dataclass(frozen=True)
class ParagraphSpace:
    """x (N, D) paragraph vectors -> unit(x - center); ``center`` (D,) is the training documents' mean."""

    center: np.ndarray

    @classmethod
    def of(cls, docvecs: np.ndarray) -> ParagraphSpace:
        return cls(center=np.asarray(docvecs, np.float32).mean(axis=0))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return _unit(np.asarray(vectors, np.float32) - self.center)


def hubness(vectors: np.ndarray, reference: np.ndarray, k: int = 10) -> np.ndarray:
    """(N,) mean cosine of each unit vector with its k nearest unit ``reference`` rows (CSLS's r)."""
    sims = np.asarray(vectors, np.float32) @ np.asarray(reference, np.float32).T  # (N, M)
    k = max(1, min(k, sims.shape[1]))
    return np.sort(sims, axis=1)[:, -k:].mean(axis=1)


def fit_image_map(feats: np.ndarray, targets: np.ndarray, *, ridge: float = 1.0) -> ImageMap:
    """Least squares with an L2 penalty (the bias unpenalised): features (N, F), unit target
    vectors (N, D). Closed form on the centred data: W = (Xc'Xc + ridge I)^-1 Xc'Yc."""
    x = _unit(np.asarray(feats, np.float64)).astype(np.float64)
    y = np.asarray(targets, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError("fit_image_map needs (N, F) features and (N, D) targets, N >= 1")
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + ridge * np.eye(x.shape[1])
    weight = np.linalg.solve(gram, xc.T @ yc)  # (F, D)
    bias = y_mean - x_mean @ weight
    return ImageMap(weight=weight.astype(np.float32), bias=bias.astype(np.float32))
