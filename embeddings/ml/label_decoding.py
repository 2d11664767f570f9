"""Label words -> constraints of ``embeddings.ml.constrained_beam`` for one caption vocabulary.

``LabelDecoding(vocab, word_vectors=...)`` turns the zero-shot label words of each image
(``embeddings.ml.zero_shot_labels``) into one disjunctive constraint per word: the ids of its
forms that are in the vocabulary ("cat", "cats", "kitten"). A word with no form in the
vocabulary ("teapot" after Flickr8k) enters as an extra id whose stand-in is the nearest
*in-vocabulary class word* ("teapot" -> "pot", "clock" -> "watch") by the cosine of
``word_vectors`` (the sentence encoder's vectors of ``STAND_IN_PROMPT`` around each word, which
matched nouns better than the bare word in a hand check): the stand-ins are concrete nouns the
decoder has learnt to place in a sentence. Without ``word_vectors`` such words are skipped (no constraint). The class
words are embedded once, on first need.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from embeddings.ml.constrained_beam import Extension
from embeddings.ml.conse import load_class_names
from embeddings.ml.vocab import EOS_ID, SPECIAL_TOKENS, Vocabulary
from embeddings.ml.zero_shot_labels import Label, class_words, confident_labels, ruled_out, word_forms

__all__ = ["LabelDecoding", "WordVectors"]

WordVectors = Callable[[list[str]], np.ndarray]  # texts -> (N, D) unit vectors
STAND_IN_PROMPT = "a photo of a {}."


class LabelDecoding:
    """Zero-shot labels and their constraints for one caption vocabulary (module doc)."""

    def __init__(self, vocab: Vocabulary, *, word_vectors: WordVectors | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        self.vocab = vocab
        self.word_vectors = word_vectors
        self.class_words = class_words(list(class_names) if class_names is not None else load_class_names())
        self._stand_ins: dict[str, str] | None = None

    def labels(self, logits: np.ndarray, *, threshold: float, max_labels: int) -> list[list[Label]]:
        """Confident label words of each image of ``logits`` (N, 1000)."""
        return confident_labels(logits, self.class_words, threshold=threshold, max_labels=max_labels)

    def ruled_out(self, logits: np.ndarray, labels: Sequence[Sequence[str]], *, below: float,
                  unlabelled: bool = False) -> list[list[str]]:
        """Words each image's labels rule out (``zero_shot_labels.ruled_out``)."""
        return ruled_out(logits, self.class_words, labels, below=below, unlabelled=unlabelled)

    def banned_ids(self, words: Sequence[str]) -> list[int]:
        """In-vocabulary ids of every form of ``words``."""
        return sorted({i for w in words for i in self.in_vocab_forms(w)})

    def in_vocab_forms(self, word: str) -> list[int]:
        return sorted(self.vocab.id_of(w) for w in word_forms(word) if w in self.vocab)

    def stand_in(self, word: str) -> str | None:
        """The in-vocabulary class word nearest to an out-of-vocabulary ``word`` (None: no vectors)."""
        if self.word_vectors is None:
            return None
        if self._stand_ins is None:
            self._stand_ins = self._build_stand_ins(sorted(set(self.class_words)))
        if word not in self._stand_ins:
            self._stand_ins.update(self._build_stand_ins([word]))
        return self._stand_ins.get(word)

    def _build_stand_ins(self, words: list[str]) -> dict[str, str]:
        if self.word_vectors is None:
            return {}
        known = sorted({w for w in self.class_words if self.in_vocab_forms(w)})
        oov = [w for w in words if not self.in_vocab_forms(w)]
        if not known or not oov:
            return {}
        vecs = np.asarray(self.word_vectors([STAND_IN_PROMPT.format(w) for w in known + oov]), np.float32)
        sims = vecs[len(known):] @ vecs[: len(known)].T  # (OOV, known)
        return {w: known[int(j)] for w, j in zip(oov, sims.argmax(axis=1))}

    def constraints(self, labels: Sequence[Sequence[str]]) -> tuple[list[list[list[int]]], Extension, list[list[str]]]:
        """(constraints per image, the extension for the OOV words, the label words used per image)."""
        extra: dict[str, int] = {}  # OOV word -> stand-in id
        plan: list[list[tuple[str, list[int]]]] = []
        for words in labels:
            row = []
            for word in dict.fromkeys(words):
                ids = self.in_vocab_forms(word)
                if not ids:
                    stand_in = self.stand_in(word)
                    if stand_in is None:
                        continue
                    extra.setdefault(word, self.vocab.id_of(stand_in))
                row.append((word, ids))
            plan.append(row)
        ext = Extension(len(self.vocab), words=tuple(extra), stand_ins=tuple(extra.values()))
        constraints = [[ids or [int(ext.id_of(word) or 0)] for word, ids in row] for row in plan]
        return constraints, ext, [[word for word, _ in row] for row in plan]

    def render(self, tokens: Sequence[int], ext: Extension) -> str:
        """Caption text of ``tokens``, extra ids rendered as their words."""
        out = []
        for t in tokens:
            if t == EOS_ID:
                break
            if t >= ext.vocab_size:
                out.append(ext.word_of(t))
            elif t >= len(SPECIAL_TOKENS) or self.vocab.word_of(t) == "<unk>":
                out.append(self.vocab.word_of(t))
        return " ".join(out)
