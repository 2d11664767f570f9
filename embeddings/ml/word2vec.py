"""Word2vec skip-gram with negative sampling (Mikolov et al. 2013), trained from scratch.

Word vectors learnt from a collection's caption corpus itself, offered as a product feature
(the word explorer: nearest words, analogies).

Training follows the reference C implementation where it matters for quality:
- vocabulary of words seen at least `min_count` times, ordered by count;
- frequent words are dropped per epoch with keep-probability (sqrt(f/t) + 1) * t / f, before
  the windows are taken, so dropping a word widens the effective window;
- each centre word draws its own window size in 1..window (nearer words are used more often);
- negatives are drawn from a unigram^0.75 table; a draw equal to the true context is skipped;
- input vectors start uniform in +-0.5/dim, output vectors at zero; the learning rate decays
  linearly to `lr * min_lr_ratio`.
Pairs are built with numpy for a whole epoch at once and trained in mini-batches, which is
what makes it fast on CPU; the vectors kept are the input (centre-word) embeddings. The
optimiser is Adam on dense or sparse gradients, or the classic plain SGD.

Text is split by the project's caption tokenizer (`embeddings.ml.vocab.tokenize`: lowercase,
punctuation dropped, inner hyphens/apostrophes kept), so the vocabulary lines up with the
caption vocabulary and the scratch text encoder.

Pure module: torch and numpy only. Checkpoint files are written by `word2vec_io`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embeddings.ml.config_dict import dataclass_from_dict, dataclass_to_dict
# The caption tokenizer (lowercase, punctuation dropped), shared with the caption vocabulary so
# word vectors line up with every other text path.
from embeddings.ml.vocab import tokenize

__all__ = [
    "Word2VecProgress", "SkipGramNS", "UnknownWord", "Vocab", "Word2Vec", "Word2VecConfig", "build_vocab",
    "keep_probabilities", "negative_table", "skipgram_pairs", "tokenize", "train_word2vec",
]  # fmt: skip

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sparse_adam", "sgd")


class UnknownWord(KeyError):
    """A query word that is not in the vocabulary (too rare, or never seen)."""

    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word

    def __str__(self) -> str:
        return f"word not in the word2vec vocabulary: {self.word!r}"


@dataclass(frozen=True)
class Word2VecConfig:
    """Hyper-parameters of one word2vec run; stored inside the checkpoint."""

    dim: int = 100  # vector size
    window: int = 5  # largest context distance; each centre draws its own in 1..window
    min_count: int = 5  # words seen fewer times are left out of the vocabulary
    negatives: int = 5  # negative samples per (centre, context) pair
    sample: float = 1e-3  # subsampling threshold t on word frequency; 0 turns it off
    ns_exponent: float = 0.75  # negatives drawn from unigram counts ** ns_exponent
    epochs: int = 5  # passes over the corpus
    batch_size: int = 4096  # (centre, context) pairs per optimiser step; larger is faster on CPU
    # "adam": dense gradients and Adam (mean loss); for vocabularies of a few thousand words
    # (Flickr8k: ~2,500) it takes about half the CPU of "sparse_adam", which updates only the
    # rows a batch touches and is the choice for large vocabularies; "sgd": classic per-pair step.
    optimizer: Literal["adam", "sparse_adam", "sgd"] = "adam"
    lr: float = 0.01  # starting learning rate, for either Adam (use ~0.025 with "sgd")
    min_lr_ratio: float = 1e-2  # the rate decays linearly to lr * min_lr_ratio
    table_size: int = 1_000_000  # slots in the negative-sampling table
    seed: int = 0  # seeds init, subsampling, windows, shuffling and negatives

    def __post_init__(self) -> None:
        positive = ("dim", "window", "min_count", "negatives", "epochs", "batch_size", "table_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"Word2VecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Word2VecConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.sample < 0 or self.lr <= 0 or not 0 < self.min_lr_ratio <= 1:
            raise ValueError("Word2VecConfig needs sample >= 0, lr > 0 and 0 < min_lr_ratio <= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Word2VecConfig:
        return dataclass_from_dict(cls, data)  # unknown keys and mistyped values raise ValueError


@dataclass(frozen=True)
class Word2VecProgress:
    """Reported to `on_progress` after each epoch."""

    epoch: int  # 1-based
    epochs: int
    loss: float  # mean per-pair loss over the epoch
    pairs: int  # (centre, context) pairs trained this epoch


class Vocab:
    """Words ordered by descending count (ties by word), with their corpus counts."""

    def __init__(self, words: Sequence[str], counts: Sequence[int]) -> None:
        if len(words) != len(counts):
            raise ValueError("words and counts differ in length")
        self.words: tuple[str, ...] = tuple(words)
        self.counts: tuple[int, ...] = tuple(int(c) for c in counts)
        self._index = {w: i for i, w in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise ValueError("duplicate words in vocabulary")

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def index(self, word: str) -> int:
        try:
            return self._index[word]
        except KeyError:
            raise UnknownWord(word) from None

    def get(self, word: str, default: int) -> int:
        return self._index.get(word, default)


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int) -> Vocab:
    counts = Counter(w for s in sentences for w in s)
    kept = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
    return Vocab([w for w, _ in kept], [c for _, c in kept])


class Word2Vec:
    """Trained word vectors with similarity queries (cosine on L2-normalised vectors)."""

    def __init__(
        self, config: Word2VecConfig, vocab: Vocab, vectors: torch.Tensor, epoch_losses: Sequence[float] = ()
    ) -> None:
        if vectors.shape != (len(vocab), config.dim):
            raise ValueError(f"vectors {tuple(vectors.shape)} do not match vocab {len(vocab)} x dim {config.dim}")
        self.config = config
        self.vocab = vocab
        self.vectors = vectors.detach().to("cpu", torch.float32).contiguous()  # (V, D)
        self.epoch_losses = tuple(float(x) for x in epoch_losses)
        self._unit = F.normalize(self.vectors, dim=1, eps=1e-12)  # (V, D)

    @property
    def words(self) -> tuple[str, ...]:
        return self.vocab.words

    def __contains__(self, word: object) -> bool:
        return word in self.vocab

    def __len__(self) -> int:
        return len(self.vocab)

    def vector(self, word: str) -> torch.Tensor:
        """The raw (unnormalised) vector of `word`, shape (D,)."""
        return self.vectors[self.vocab.index(word)]

    def similarity(self, a: str, b: str) -> float:
        return float(self._unit[self.vocab.index(a)] @ self._unit[self.vocab.index(b)])

    def nearest(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The k words most cosine-similar to `word`, itself excluded, best first."""
        i = self.vocab.index(word)
        return self._rank(self._unit[i], k, exclude=(i,))

    def analogy(self, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
        """"a is to b as c is to ?": words nearest to b - a + c (3CosAdd), a, b, c excluded.

        analogy("man", "king", "woman") ranks king - man + woman, hoping for "queen".
        """
        ia, ib, ic = (self.vocab.index(w) for w in (a, b, c))
        query = self._unit[ib] - self._unit[ia] + self._unit[ic]  # (D,)
        return self._rank(F.normalize(query, dim=0, eps=1e-12), k, exclude=(ia, ib, ic))

    def nearest_to_vector(self, vector: torch.Tensor, k: int = 10) -> list[tuple[str, float]]:
        """The k words most cosine-similar to an arbitrary (D,) vector."""
        return self._rank(F.normalize(vector.float().cpu(), dim=0, eps=1e-12), k, exclude=())

    def _rank(self, query: torch.Tensor, k: int, exclude: Sequence[int]) -> list[tuple[str, float]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        sims = self._unit @ query  # (V,)
        if exclude:
            sims[list(exclude)] = -math.inf
        k = min(k, len(self.vocab) - len(set(exclude)))
        if k <= 0:
            return []
        top = torch.topk(sims, k)
        return [(self.vocab.words[int(i)], float(s)) for s, i in zip(top.values, top.indices)]

    def to_dict(self) -> dict[str, Any]:
        """Checkpoint contents: `vectors` is a tensor, everything else is JSON-able."""
        return {
            "config": self.config.to_dict(),
            "words": list(self.vocab.words),
            "counts": list(self.vocab.counts),
            "epoch_losses": list(self.epoch_losses),
            "vectors": self.vectors,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Word2Vec:
        config = Word2VecConfig.from_dict(data["config"])
        vocab = Vocab(data["words"], data["counts"])
        return cls(config, vocab, torch.as_tensor(data["vectors"]), data.get("epoch_losses", ()))


class SkipGramNS(nn.Module):
    """Two embedding tables; the loss of a batch of (centre, context, negatives)."""

    def __init__(self, vocab_size: int, dim: int, generator: torch.Generator, sparse: bool = True) -> None:
        super().__init__()
        # Sparse gradients pay off when a batch touches a small share of a large vocabulary.
        self.in_embed = nn.Embedding(vocab_size, dim, sparse=sparse)
        self.out_embed = nn.Embedding(vocab_size, dim, sparse=sparse)
        with torch.no_grad():
            bound = 0.5 / dim
            self.in_embed.weight.uniform_(-bound, bound, generator=generator)
            self.out_embed.weight.zero_()

    def forward(self, centre: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.in_embed(centre)  # (B, D)
        u = self.out_embed(context)  # (B, D)
        u_neg = self.out_embed(negatives)  # (B, K, D)
        pos = (v * u).sum(-1)  # (B,)
        neg = torch.bmm(u_neg, v.unsqueeze(-1)).squeeze(-1)  # (B, K)
        # A negative that happens to be the true context word is skipped, as in the C code.
        keep = (negatives != context.unsqueeze(1)).to(neg.dtype)  # (B, K)
        per_pair = -F.logsigmoid(pos) - (F.logsigmoid(-neg) * keep).sum(-1)  # (B,)
        return {"loss": per_pair.mean(), "pair_loss_sum": per_pair.sum()}


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Per-word probability of keeping an occurrence: (sqrt(f/t) + 1) * t / f, capped at 1."""
    if sample <= 0:
        return np.ones(len(counts))
    ratio = sample * counts.sum() / counts  # t / f
    return np.minimum(1.0, np.sqrt(ratio) + ratio)


def negative_table(counts: np.ndarray, exponent: float, size: int) -> np.ndarray:
    """A table of word ids where each word fills a share of slots proportional to count**exponent."""
    weights = counts.astype(np.float64) ** exponent
    cdf = np.cumsum(weights / weights.sum())
    slots = (np.arange(size) + 0.5) / size
    return np.minimum(np.searchsorted(cdf, slots), len(counts) - 1).astype(np.int64)


def skipgram_pairs(
    ids: np.ndarray, sentence_of: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """All (centre, context) pairs of one epoch, shuffled, with a dynamic window per centre.

    `ids` and `sentence_of` (N,) give each kept token's word id and sentence; pairs never cross
    sentences. Returns two (P,) arrays of word ids.
    """
    reach = rng.integers(1, window + 1, size=len(ids))  # (N,) window drawn for each centre
    centres, contexts = [], []
    for off in range(1, min(window, len(ids) - 1) + 1):
        same = sentence_of[:-off] == sentence_of[off:]  # (N - off,) token i and i + off share a sentence
        fwd = np.nonzero(same & (reach[:-off] >= off))[0]  # centre i, context i + off
        bwd = np.nonzero(same & (reach[off:] >= off))[0]  # centre i + off, context i
        centres += [ids[fwd], ids[bwd + off]]
        contexts += [ids[fwd + off], ids[bwd]]
    if not centres:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    c, x = np.concatenate(centres), np.concatenate(contexts)
    order = rng.permutation(len(c))
    return c[order], x[order]


def _encode_corpus(sentences: Sequence[Sequence[str]], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of in-vocabulary tokens (N,) and the sentence each came from (N,)."""
    ids, sentence_of = [], []
    for s, sentence in enumerate(sentences):
        for word in sentence:
            i = vocab.get(word, -1)
            if i >= 0:
                ids.append(i)
                sentence_of.append(s)
    return np.asarray(ids, np.int64), np.asarray(sentence_of, np.int64)


def _as_token_lists(sentences: Iterable[str | Sequence[str]]) -> list[Sequence[str]]:
    return [tokenize(s) if isinstance(s, str) else s for s in sentences]


def train_word2vec(
    sentences: Iterable[str | Sequence[str]],
    config: Word2VecConfig,
    *,
    device: torch.device | str = "cpu",
    on_progress: Callable[[Word2VecProgress], None] | None = None,
) -> Word2Vec:
    """Train skip-gram with negative sampling; strings are tokenised, token lists used as given."""
    token_lists = _as_token_lists(sentences)
    vocab = build_vocab(token_lists, config.min_count)
    if len(vocab) < 2:
        raise ValueError(f"corpus has {len(vocab)} word(s) with count >= {config.min_count}; need at least 2")
    device = torch.device(device)
    ids, sentence_of = _encode_corpus(token_lists, vocab)
    counts = np.asarray(vocab.counts, np.float64)
    keep_p = keep_probabilities(counts, config.sample)  # (V,)
    table = negative_table(counts, config.ns_exponent, config.table_size)  # (table_size,)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = SkipGramNS(len(vocab), config.dim, generator, sparse=config.optimizer != "adam").to(device)
    if config.optimizer == "sparse_adam":
        opt: torch.optim.Optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=config.lr)
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    log.info("word2vec: %d words, %d tokens, %d epochs on %s", len(vocab), len(ids), config.epochs, device)
    epoch_losses = []
    for epoch in range(config.epochs):
        kept = rng.random(len(ids)) < keep_p[ids]  # subsample frequent words afresh each epoch
        centres, contexts = skipgram_pairs(ids[kept], sentence_of[kept], config.window, rng)
        loss = _train_epoch(model, opt, config, centres, contexts, table, rng, epoch, device)
        epoch_losses.append(loss)
        log.info("word2vec epoch %d/%d: %d pairs, loss %.4f", epoch + 1, config.epochs, len(centres), loss)
        if on_progress is not None:
            on_progress(Word2VecProgress(epoch=epoch + 1, epochs=config.epochs, loss=loss, pairs=len(centres)))
    return Word2Vec(config, vocab, model.in_embed.weight.detach().cpu(), epoch_losses)


def _train_epoch(
    model: SkipGramNS,
    opt: torch.optim.Optimizer,
    config: Word2VecConfig,
    centres: np.ndarray,
    contexts: np.ndarray,
    table: np.ndarray,
    rng: np.random.Generator,
    epoch: int,
    device: torch.device,
) -> float:
    """One pass over the pairs; returns the mean per-pair loss."""
    n = len(centres)
    if n == 0:
        return float("nan")
    total = torch.zeros((), device=device)
    for start in range(0, n, config.batch_size):
        # Linear decay over the whole run, as in the reference implementation.
        progress = (epoch + start / n) / config.epochs
        for group in opt.param_groups:
            group["lr"] = config.lr * max(config.min_lr_ratio, 1.0 - progress)
        stop = min(start + config.batch_size, n)
        negatives = table[rng.integers(0, len(table), size=(stop - start, config.negatives))]  # (B, K)
        out = model(
            torch.from_numpy(centres[start:stop]).to(device),
            torch.from_numpy(contexts[start:stop]).to(device),
            torch.from_numpy(negatives).to(device),
        )
        # SGD keeps the classic per-pair step size (summed loss); Adam normalises its steps anyway.
        objective = out["pair_loss_sum"] if config.optimizer == "sgd" else out["loss"]
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        total += out["pair_loss_sum"].detach()
    return float(total) / n
