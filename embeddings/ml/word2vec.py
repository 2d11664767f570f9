"""Word2vec skip-gram with negative sampling (Mikolov et al. 2013), trained by gensim.

Word vectors learnt from a collection's caption corpus itself, offered as a product feature
(the word explorer: nearest words, analogies). Training is gensim 4's `Word2Vec` (sg=1,
negative sampling), the maintained reference implementation of the C tool; it replaced a
hand-written torch skip-gram after a side-by-side benchmark (docs/design/word2vec.md).

gensim's multi-threaded training is itself lock-free asynchronous SGD: `workers` threads each
take batches of sentences and update the shared input/output matrices without any lock
(Hogwild, Recht et al. 2011) -- the single-machine form of Downpour's asynchronous updates. With
`workers=1` and a fixed `seed` a run is reproducible; with more workers the interleaving of the
threads, hence the vectors, differ slightly between runs.

Text is split by the project's caption tokenizer (`embeddings.ml.vocab.tokenize`: lowercase,
punctuation dropped, inner hyphens/apostrophes kept) before gensim sees it, so the vocabulary
lines up with the caption vocabulary and the scratch text encoder.

Only the trained input vectors are kept (`Word2Vec` below: vocabulary, counts, vectors and
cosine queries); they are stored as safetensors by `word2vec_io`, not in gensim's pickle format.

Pure module: gensim, numpy and torch only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embeddings.ml.config_dict import dataclass_from_dict, dataclass_to_dict
# The caption tokenizer (lowercase, punctuation dropped), shared with the caption vocabulary so
# word vectors line up with every other text path.
from embeddings.ml.vocab import tokenize

__all__ = [
    "CLASSIC_ANALOGIES", "UnknownWord", "Vocab", "Word2Vec", "Word2VecConfig", "Word2VecProgress",
    "analogies_in_vocabulary", "tokenize", "train_word2vec",
]  # fmt: skip

log = logging.getLogger(__name__)

# The analogies the talk and the word2vec papers show, "a is to b as c is to d" (b - a + c ~ d),
# with caption-corpus ones first. The words page offers those whose four words are all in a
# collection's vocabulary (a Flickr8k vocabulary has no "king" or "queen"); the benchmark
# scores the same list.
CLASSIC_ANALOGIES: tuple[tuple[str, str, str, str], ...] = (
    ("man", "boy", "woman", "girl"),
    ("boy", "girl", "man", "woman"),
    ("man", "men", "woman", "women"),
    ("dog", "dogs", "man", "men"),
    ("dog", "dogs", "child", "children"),
    ("walking", "walks", "running", "runs"),
    ("man", "king", "woman", "queen"),  # Mikolov et al. 2013's own example
    ("france", "paris", "italy", "rome"),
)


class UnknownWord(KeyError):
    """A query word that is not in the vocabulary (too rare, or never seen)."""

    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word

    def __str__(self) -> str:
        return f"word not in the word2vec vocabulary: {self.word!r}"


@dataclass(frozen=True)
class Word2VecConfig:
    """Hyper-parameters of one gensim word2vec run; stored inside the checkpoint."""

    dim: int = 100  # vector size
    window: int = 5  # largest context distance; gensim draws each centre's own in 1..window
    min_count: int = 5  # words seen fewer times are left out of the vocabulary
    negatives: int = 5  # negative samples per (centre, context) pair
    sample: float = 1e-3  # subsampling threshold t on word frequency; 0 turns it off
    ns_exponent: float = 0.75  # negatives drawn from unigram counts ** ns_exponent
    epochs: int = 5  # passes over the corpus
    lr: float = 0.025  # gensim's alpha: starting SGD step, decaying linearly to min_lr
    min_lr: float = 1e-4  # gensim's min_alpha
    # Threads of gensim's lock-free (Hogwild) SGD. 1: on the 2 shared cores of the reference
    # machine 2 workers were no faster (Flickr8k train captions, median 2.7 s against 2.0 s;
    # bench/results/word2vec.md), and 1 makes a run reproducible; more pay off on more cores.
    workers: int = 1
    seed: int = 0  # seeds init, subsampling, windows and negatives

    def __post_init__(self) -> None:
        for name in ("dim", "window", "min_count", "negatives", "epochs", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"Word2VecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.sample < 0 or self.lr <= 0 or not 0 < self.min_lr <= self.lr:
            raise ValueError("Word2VecConfig needs sample >= 0, lr > 0 and 0 < min_lr <= lr")

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
    loss: float  # gensim's summed skip-gram loss over the epoch's pairs (its own running tally)


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


def analogies_in_vocabulary(
    words: Iterable[str] | Word2Vec, analogies: Sequence[tuple[str, str, str, str]] = CLASSIC_ANALOGIES
) -> list[tuple[str, str, str, str]]:
    """The analogies whose four words are all in the vocabulary, in their given order."""
    known = set(words.words if isinstance(words, Word2Vec) else words)
    return [a for a in analogies if all(w in known for w in a)]


def _as_token_lists(sentences: Iterable[str | Sequence[str]]) -> list[list[str]]:
    return [tokenize(s) if isinstance(s, str) else list(s) for s in sentences]


def train_word2vec(
    sentences: Iterable[str | Sequence[str]],
    config: Word2VecConfig,
    *,
    on_progress: Callable[[Word2VecProgress], None] | None = None,
) -> Word2Vec:
    """Train skip-gram with negative sampling; strings are tokenised, token lists used as given."""
    from gensim.models import Word2Vec as GensimWord2Vec  # a heavy import, needed only to train
    from gensim.models.callbacks import CallbackAny2Vec

    token_lists = [s for s in _as_token_lists(sentences) if s]
    counts: dict[str, int] = {}
    for sentence in token_lists:
        for w in sentence:
            counts[w] = counts.get(w, 0) + 1
    n_kept = sum(1 for c in counts.values() if c >= config.min_count)
    if n_kept < 2:
        raise ValueError(f"corpus has {n_kept} word(s) with count >= {config.min_count}; need at least 2")

    losses: list[float] = []

    class _Epochs(CallbackAny2Vec):  # type: ignore[misc]  # gensim ships no type hints
        """gensim's running loss is a total since training began: report each epoch's share."""

        def on_epoch_end(self, model: Any) -> None:
            total = float(model.get_latest_training_loss())
            losses.append(total - sum(losses))
            if on_progress is not None:
                on_progress(Word2VecProgress(epoch=len(losses), epochs=config.epochs, loss=losses[-1]))

    model = GensimWord2Vec(
        sentences=token_lists, vector_size=config.dim, window=config.window, min_count=config.min_count,
        sg=1, hs=0, negative=config.negatives, sample=config.sample, ns_exponent=config.ns_exponent,
        epochs=config.epochs, alpha=config.lr, min_alpha=config.min_lr, workers=config.workers,
        seed=config.seed, compute_loss=True, callbacks=[_Epochs()], sorted_vocab=1,
    )
    kv = model.wv
    # Order the vocabulary as Vocab promises (count descending, then word), independent of
    # gensim's tie order.
    order = sorted(range(len(kv.index_to_key)), key=lambda i: (-kv.get_vecattr(kv.index_to_key[i], "count"),
                                                                kv.index_to_key[i]))
    words = [kv.index_to_key[i] for i in order]
    vocab = Vocab(words, [int(kv.get_vecattr(w, "count")) for w in words])
    vectors = torch.from_numpy(np.ascontiguousarray(kv.vectors[order], dtype=np.float32))  # (V, D)
    log.info("word2vec (gensim, %d workers): %d words, %d epochs", config.workers, len(vocab), config.epochs)
    return Word2Vec(config, vocab, vectors, losses)
