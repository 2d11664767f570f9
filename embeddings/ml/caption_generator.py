"""The captioning facade: a trained decoder (or ensemble) + vocabulary + decoding defaults.

``load_captioner(path)`` restores a ``CaptionGenerator`` from a checkpoint written by
``save_captioner``; ``generator.caption(pooled, spatial, beam_size=.., n=..)`` captions a batch
and ``caption_one`` a single image. Features come from ``embeddings.ml.image_encoder``
(pooled (B, 1280), spatial (B, 49, 1280)); the show-and-tell decoder ignores ``spatial``.

Checkpoint layout (``embeddings.ml.checkpoint``): tensors are the decoder's state dict (an
ensemble's members under ``members.<i>.``); config is the ``CaptionerConfig``; meta holds
``kind="captioner"``, the vocabulary, the number of ensemble members, the tuned
``DecodingConfig`` and free-form training info.

Guided decoding (``DecodingConfig.constrain_labels``): ``zero_shot_labels(logits)`` gives the
confident ImageNet label words of each image and ``caption(..., labels=...)`` runs constrained
beam search (``embeddings.ml.constrained_beam``) so each caption names them; out-of-vocabulary
label words enter through ``embeddings.ml.label_decoding`` (stand-ins by ``word_vectors``).
Greedy decoding (beam 1, n 1) is never constrained.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from embeddings.ml.caption_decoding import Ensemble, Hypothesis, beam_search, greedy_decode
from embeddings.ml.captioner import CaptionDecoder, CaptionerConfig, build_decoder
from embeddings.ml.constrained_beam import constrained_beam_search
from embeddings.ml.label_decoding import LabelDecoding, WordVectors
from embeddings.ml.checkpoint import IncompatibleCheckpoint, load_checkpoint, save_checkpoint
from embeddings.ml.config_dict import dataclass_from_dict
from embeddings.ml.vocab import Vocabulary

CHECKPOINT_KIND = "captioner"


@dataclass(frozen=True)
class DecodingConfig:
    """Default decoding settings, tuned on dev and stored with the checkpoint."""

    beam_size: int = 3  # 1 = greedy
    length_penalty: float = 0.0  # rank by log_prob / length**length_penalty
    no_repeat_ngram_size: int = 0  # 0 = off; n forbids repeating any n-gram
    max_len: int | None = None  # None: the model's CaptionerConfig.max_len
    block_unk: bool = True  # never generate <unk>
    constrain_labels: bool = False  # beam captions must name the confident zero-shot labels
    label_threshold: float = 0.5  # a label word's summed ImageNet probability to be confident
    max_labels: int = 1  # label words (constraints) per image at most
    rule_out_below: float = 0.0  # > 0: beside an animal label, ban animal words below this probability
    rule_out_unlabelled: bool = False  # ... and in pictures without an animal label too

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecodingConfig:
        return dataclass_from_dict(cls, data)


@dataclass(frozen=True)
class GeneratedCaption:
    text: str  # normalized caption (lowercase words, no punctuation)
    log_prob: float  # sum of token log-probabilities, <eos> included
    score: float  # length-normalized ranking score
    labels: tuple[str, ...] = ()  # label words this caption was constrained to name


class CaptionGenerator:
    """Captions images from precomputed features with beam search or greedy decoding."""

    def __init__(
        self,
        decoder: CaptionDecoder | Ensemble,
        vocab: Vocabulary,
        *,
        decoding: DecodingConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if decoder.config.vocab_size != len(vocab):
            raise ValueError(f"decoder vocab_size {decoder.config.vocab_size} != vocabulary size {len(vocab)}")
        self.device = torch.device(device)
        self.decoder = decoder.to(self.device).eval()
        self.vocab = vocab
        self.decoding = decoding or DecodingConfig()
        self._labels: LabelDecoding | None = None
        self.word_vectors: WordVectors | None = None  # unit vectors of words: OOV label stand-ins

    @property
    def label_decoding(self) -> LabelDecoding:
        if self._labels is None or self._labels.word_vectors is not self.word_vectors:
            self._labels = LabelDecoding(self.vocab, word_vectors=self.word_vectors)
        return self._labels

    def zero_shot_labels(self, logits: np.ndarray | Tensor) -> list[list[str]]:
        """Confident label words of each image of ImageNet ``logits`` (B, 1000) under ``decoding``."""
        d = self.decoding
        found = self.label_decoding.labels(np.asarray(logits, np.float32), threshold=d.label_threshold,
                                           max_labels=d.max_labels)
        return [[label.word for label in per_image] for per_image in found]

    def guidance(self, logits: np.ndarray | Tensor, *, beam_size: int | None = None, n: int = 1,
                 on: bool | None = None) -> tuple[list[list[str]] | None, list[list[str]] | None]:
        """(labels, avoid) for ``caption`` of images with these ImageNet ``logits`` (B, 1000), as the
        stored decoding asks (``on`` overrides ``constrain_labels``); (None, None) when off or greedy."""
        wanted = self.decoding.constrain_labels if on is None else on
        if not wanted or ((beam_size or self.decoding.beam_size) == 1 and n == 1):
            return None, None
        labels = self.zero_shot_labels(logits)
        return labels, self.ruled_out_words(logits, labels)

    def ruled_out_words(self, logits: np.ndarray | Tensor, labels: Sequence[Sequence[str]]) -> list[list[str]]:
        """Words the labels rule out (``decoding.rule_out_below``; [] each when 0)."""
        below = self.decoding.rule_out_below
        if below <= 0:
            return [[] for _ in labels]
        return self.label_decoding.ruled_out(np.asarray(logits, np.float32), labels, below=below,
                                             unlabelled=self.decoding.rule_out_unlabelled)

    @property
    def config(self) -> CaptionerConfig:
        return self.decoder.config

    @property
    def needs_spatial(self) -> bool:
        return self.config.decoder == "attention"

    def caption(
        self,
        pooled: Tensor,
        spatial: Tensor | None = None,
        *,
        beam_size: int | None = None,
        n: int = 1,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        labels: Sequence[Sequence[str]] | None = None,
        avoid: Sequence[Sequence[str]] | None = None,
    ) -> list[list[GeneratedCaption]]:
        """The ``n`` best captions of each image: pooled (B, F), spatial (B, N, F) or None.

        Unset options fall back to ``self.decoding``. ``beam_size=1`` (and n=1) is greedy.
        ``labels`` (words per image) constrain a beam search to name them (module doc), and
        ``avoid`` (words per image) are never said by a beam search, with labels or without.
        """
        d = self.decoding
        beam_size = beam_size or d.beam_size
        pooled = pooled.to(self.device, torch.float32)
        spatial = None if spatial is None else spatial.to(self.device, torch.float32)
        if self.needs_spatial and spatial is None:
            raise ValueError("this captioner attends over spatial features: pass spatial (B, N, F)")
        if beam_size == 1 and n == 1:  # greedy: never constrained
            greedy = greedy_decode(self.decoder, pooled, spatial, max_len=d.max_len, block_unk=d.block_unk)
            return [[self._to_caption(h)] for h in greedy]
        options: dict[str, Any] = dict(
            beam_size=max(beam_size, n), n_best=n, max_len=d.max_len,
            length_penalty=d.length_penalty if length_penalty is None else length_penalty,
            no_repeat_ngram_size=d.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size,
            block_unk=d.block_unk,
        )
        avoiding = avoid is not None and any(avoid)  # words to avoid need the constrained search too
        if (labels is not None and any(labels)) or avoiding:
            labels = labels if labels is not None else [[] for _ in range(pooled.shape[0])]
            if len(labels) != pooled.shape[0]:
                raise ValueError(f"need one label list per image, got {len(labels)} for {pooled.shape[0]}")
            if avoid is not None:
                options["banned"] = [self.label_decoding.banned_ids(words) for words in avoid]
            return self._constrained(pooled, spatial, labels, options)
        hyps = beam_search(self.decoder, pooled, spatial, **options)
        return [[self._to_caption(h) for h in per_image] for per_image in hyps]

    def _constrained(self, pooled: Tensor, spatial: Tensor | None, labels: Sequence[Sequence[str]],
                     options: dict[str, Any]) -> list[list[GeneratedCaption]]:
        dec = self.label_decoding
        constraints, ext, used = dec.constraints(labels)
        hyps = constrained_beam_search(self.decoder, pooled, spatial, constraints, extension=ext, **options)
        out = []
        for per_image, alts, words in zip(hyps, constraints, used):
            out.append([
                GeneratedCaption(text=dec.render(h.tokens, ext), log_prob=h.log_prob, score=h.score,
                                 labels=tuple(words) if all(set(a) & set(h.tokens) for a in alts) else ())
                for h in per_image])
        return out

    def caption_one(
        self, pooled: Tensor, spatial: Tensor | None = None, *, beam_size: int | None = None, n: int = 1,
        labels: Sequence[str] | None = None,
    ) -> list[GeneratedCaption]:
        """Captions of one image: pooled (F,), spatial (N, F) or None; best first."""
        spatial_b = None if spatial is None else spatial.unsqueeze(0)
        return self.caption(pooled.unsqueeze(0), spatial_b, beam_size=beam_size, n=n,
                            labels=None if labels is None else [labels])[0]

    def _to_caption(self, hyp: Hypothesis) -> GeneratedCaption:
        return GeneratedCaption(text=self.vocab.decode(hyp.tokens), log_prob=hyp.log_prob, score=hyp.score)


def captioner_checkpoint_parts(
    decoder: CaptionDecoder | Ensemble,
    vocab: Vocabulary,
    *,
    decoding: DecodingConfig | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """Pure builder: (tensors, config dict, meta dict) for ``save_checkpoint``."""
    members = len(decoder.members) if isinstance(decoder, Ensemble) else 1
    tensors = {k: v.detach().cpu() for k, v in decoder.state_dict().items()}
    meta = {
        **dict(extra_meta or {}),
        "kind": CHECKPOINT_KIND,
        "vocab": vocab.to_dict(),
        "ensemble_members": members,
        "decoding": (decoding or DecodingConfig()).to_dict(),
    }
    return tensors, decoder.config.to_dict(), meta


def save_captioner(
    path: str | os.PathLike,
    decoder: CaptionDecoder | Ensemble,
    vocab: Vocabulary,
    *,
    decoding: DecodingConfig | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a captioner checkpoint atomically; returns the manifest path."""
    tensors, config, meta = captioner_checkpoint_parts(decoder, vocab, decoding=decoding, extra_meta=extra_meta)
    return save_checkpoint(path, tensors=tensors, config=config, meta=meta)


def load_captioner(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> CaptionGenerator:
    """Restore a ``CaptionGenerator`` from its checkpoint alone (raises CheckpointError subclasses)."""
    tensors, config_dict, meta = load_checkpoint(path, expected_kind=CHECKPOINT_KIND)
    try:
        config = CaptionerConfig.from_dict(config_dict)
        vocab = Vocabulary.from_dict(meta["vocab"])
        decoding = DecodingConfig.from_dict(meta.get("decoding", {}))
        members = int(meta.get("ensemble_members", 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise IncompatibleCheckpoint(f"{path}: not a usable captioner checkpoint: {exc}") from exc
    decoder: CaptionDecoder | Ensemble
    if members > 1:
        decoder = Ensemble([build_decoder(config) for _ in range(members)])
    else:
        decoder = build_decoder(config)
    try:
        decoder.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise IncompatibleCheckpoint(f"{path}: weights do not fit the config: {exc}") from exc
    return CaptionGenerator(decoder, vocab, decoding=decoding, device=device)
