"""Caption tokenizer and vocabulary.

The tokenizer lowercases text and keeps runs of letters and digits, allowing a hyphen or an
apostrophe *inside* a word ("t-shirt", "dog's"); every other character is a separator, so
punctuation is dropped. That matches what the COCO caption evaluation does (PTB tokenization
followed by removal of punctuation tokens), so generated text is scored on the same words the
decoder was trained on.

``normalize(text)`` is the canonical form: tokens joined by single spaces. For any text whose
words are all in the vocabulary, ``vocab.decode(vocab.encode(text)) == normalize(text)``.

The vocabulary is built from training captions only, keeps words seen at least ``min_count``
times, and reserves ids 0..3 for ``<pad> <bos> <eos> <unk>``. Word order is by descending count,
then alphabetical, so building twice from the same captions gives the same ids.
``to_dict``/``from_dict`` give a JSON-safe form stored in the checkpoint.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

VOCAB_FORMAT_VERSION = 1

# A word: letters/digits ([^\W_] is \w without the underscore), optionally joined by single
# inner hyphens or apostrophes. Leading/trailing "-" or "'" are punctuation and dropped.
_WORD_RE = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lowercase word tokens, dropping punctuation."""
    tokens = _WORD_RE.findall(text.lower())
    # Lowercasing some characters yields combining marks that the regex treats as separators;
    # a second pass makes tokenize(normalize(x)) == tokenize(x) hold for every input.
    return _WORD_RE.findall(" ".join(tokens).lower())


def normalize(text: str) -> str:
    """Canonical form of a caption: its tokens joined by single spaces."""
    return " ".join(tokenize(text))


class Vocabulary:
    """Bidirectional word <-> id map with reserved special tokens."""

    def __init__(self, words: Sequence[str], *, min_count: int = 1) -> None:
        """``words`` are the non-special tokens in id order (ids start at len(SPECIAL_TOKENS))."""
        itos = list(SPECIAL_TOKENS) + list(words)
        if len(set(itos)) != len(itos):
            raise ValueError("vocabulary words must be unique and must not repeat special tokens")
        for word in words:
            if tokenize(word) != [word]:
                raise ValueError(f"vocabulary word {word!r} is not a single normalized token")
        self._itos = itos
        self._stoi = {w: i for i, w in enumerate(itos)}
        self.min_count = min_count

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 5) -> Vocabulary:
        """Build from training captions, keeping words seen at least ``min_count`` times."""
        if min_count < 1:
            raise ValueError("min_count must be >= 1")
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(tokenize(caption))
        kept = [w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS]
        kept.sort(key=lambda w: (-counts[w], w))
        return cls(kept, min_count=min_count)

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, word: object) -> bool:
        return word in self._stoi

    @property
    def words(self) -> list[str]:
        """All tokens in id order, special tokens first."""
        return list(self._itos)

    def id_of(self, word: str) -> int:
        return self._stoi.get(word, UNK_ID)

    def word_of(self, index: int) -> str:
        return self._itos[index]

    def encode(self, text: str, *, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Token ids of ``text``; out-of-vocabulary words become ``<unk>``."""
        ids = [self.id_of(w) for w in tokenize(text)]
        if add_bos:
            ids.insert(0, BOS_ID)
        if add_eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids: Iterable[int], *, keep_unk: bool = True) -> str:
        """Text of ``ids``: stops at the first ``<eos>``, skips ``<pad>``/``<bos>``."""
        words: list[str] = []
        for index in ids:
            index = int(index)
            if index == EOS_ID:
                break
            if index in (PAD_ID, BOS_ID):
                continue
            if index == UNK_ID and not keep_unk:
                continue
            if not 0 <= index < len(self._itos):
                raise IndexError(f"token id {index} outside vocabulary of size {len(self)}")
            words.append(self._itos[index])
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (stored in checkpoint configs)."""
        return {
            "format_version": VOCAB_FORMAT_VERSION,
            "min_count": self.min_count,
            "words": self._itos[len(SPECIAL_TOKENS) :],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        """Inverse of ``to_dict``; rejects unknown keys and other format versions."""
        expected = {"format_version", "min_count", "words"}
        unknown = set(data) - expected
        if unknown:
            raise ValueError(f"unknown vocabulary keys: {sorted(unknown)}")
        missing = expected - set(data)
        if missing:
            raise ValueError(f"missing vocabulary keys: {sorted(missing)}")
        if data["format_version"] != VOCAB_FORMAT_VERSION:
            raise ValueError(
                f"vocabulary format {data['format_version']} is not supported "
                f"(expected {VOCAB_FORMAT_VERSION})"
            )
        return cls(list(data["words"]), min_count=int(data["min_count"]))
