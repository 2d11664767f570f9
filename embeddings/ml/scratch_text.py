"""A small GRU caption encoder trained from scratch, its word embeddings seeded by word2vec.

The from-scratch alternative to the frozen MiniLM text side: captions are split by the
caption tokenizer, mapped to ids by a `Vocabulary` (ids 0..3 are <pad> <bos> <eos> <unk>),
embedded, run through a (bi)GRU and pooled, then projected to `out_dim`. By default
`out_dim` = 384, MiniLM's width, so its output drops into `JointEmbedding.encode_text` in
place of the MiniLM sentence vector and the whole stack trains end to end.

The API mirrors `embeddings.ml.text_encoder.TextEncoder` (`tokenize` -> batch dict,
`forward(batch, normalize)`, `encode(texts)`), so a trainer can swap one for the other.

Embedding rows start from the word2vec vectors (`from_word2vec`): row 4 + i is word2vec word i;
<unk> starts at the mean word vector (a rare word is most like an average word), <pad>, <bos>
and <eos> at zero (<pad> is the padding index and never moves; <bos>/<eos> are not used here).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from embeddings.ml.config_dict import dataclass_from_dict, dataclass_to_dict
from embeddings.ml.vocab import PAD_ID, SPECIAL_TOKENS, UNK_ID, Vocabulary
from embeddings.ml.word2vec import Word2Vec

__all__ = ["ScratchTextConfig", "ScratchTextEncoder", "scratch_text_from_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScratchTextConfig:
    """Shape of the scratch text encoder; saved inside the checkpoint."""

    embed_dim: int = 100  # word vector width; must equal the word2vec dim it is seeded from
    hidden: int = 256  # GRU hidden size per direction
    layers: int = 1  # stacked GRU layers
    bidirectional: bool = True  # a backward pass too: the last word sees the first
    pooling: Literal["mean", "last"] = "mean"  # mean of GRU outputs over real tokens, or final states
    out_dim: int = 384  # output width; 384 = MiniLM, so it feeds JointEmbedding's text head
    dropout: float = 0.1  # on word embeddings (and between GRU layers when layers > 1)
    max_tokens: int = 40  # longer captions are cut (Flickr8k's longest train caption has 38 words)
    freeze_embeddings: bool = False  # keep the word2vec vectors fixed while training the rest
    seed: int = 0  # initialises the GRU and projection (the global RNG is left alone)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "hidden", "layers", "out_dim", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScratchTextConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("ScratchTextConfig.dropout must be in [0, 1)")
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"ScratchTextConfig.pooling must be 'mean' or 'last', got {self.pooling!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScratchTextConfig:
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)


class ScratchTextEncoder(nn.Module):
    """Captions -> (B, out_dim) vectors: embedding -> GRU -> pooling -> linear."""

    def __init__(self, config: ScratchTextConfig, vocab: Vocabulary) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.embed = nn.Embedding(len(vocab), config.embed_dim, padding_idx=PAD_ID)
            self.drop = nn.Dropout(config.dropout)
            self.gru = nn.GRU(
                config.embed_dim,
                config.hidden,
                num_layers=config.layers,
                batch_first=True,
                bidirectional=config.bidirectional,
                dropout=config.dropout if config.layers > 1 else 0.0,
            )
            directions = 2 if config.bidirectional else 1
            self.proj = nn.Linear(directions * config.hidden, config.out_dim)
        self.embed.weight.requires_grad_(not config.freeze_embeddings)

    @classmethod
    def from_word2vec(cls, w2v: Word2Vec, config: ScratchTextConfig | None = None) -> ScratchTextEncoder:
        """An encoder whose vocabulary is w2v's and whose embedding rows start at its vectors."""
        config = config or ScratchTextConfig(embed_dim=w2v.config.dim)
        if config.embed_dim != w2v.config.dim:
            raise ValueError(f"embed_dim {config.embed_dim} != word2vec dim {w2v.config.dim}")
        model = cls(config, Vocabulary(list(w2v.words), min_count=w2v.config.min_count))
        n_special = len(SPECIAL_TOKENS)
        with torch.no_grad():
            model.embed.weight.zero_()
            model.embed.weight[n_special:] = w2v.vectors  # (V, E), same order as w2v.words
            model.embed.weight[UNK_ID] = w2v.vectors.mean(dim=0)
        return model

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Batch of captions -> {"input_ids": (B, T), "attention_mask": (B, T)} on device.

        Out-of-vocabulary words become <unk>; a caption with no words at all becomes a single
        <unk> so every row has at least one real step.
        """
        if isinstance(texts, str):
            raise TypeError("pass a sequence of strings, not a single string")
        if not texts:
            raise ValueError("no texts to tokenize")
        rows = [self.vocab.encode(t, add_bos=False, add_eos=False)[: self.config.max_tokens] or [UNK_ID] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def forward(self, batch: Mapping[str, torch.Tensor], normalize: bool = False) -> torch.Tensor:
        """Tokenised batch -> (B, out_dim); differentiable. Padding never changes a row's output."""
        ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, T), (B, T)
        lengths = mask.sum(dim=1).clamp(min=1)  # (B,)
        x = self.drop(self.embed(ids))  # (B, T, E)
        # Packing makes the GRU stop at each row's last real token (matters for "last" and the
        # backward direction, which would otherwise start from padding).
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)  # h_n: (layers * dirs, B, H)
        if self.config.pooling == "mean":
            steps, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (B, T, dirs*H)
            m = mask.unsqueeze(-1).to(steps.dtype)  # (B, T, 1)
            pooled = (steps * m).sum(dim=1) / lengths.unsqueeze(-1).to(steps.dtype)  # (B, dirs*H)
        else:
            dirs = 2 if self.config.bidirectional else 1
            last = h_n.view(self.config.layers, dirs, ids.shape[0], self.config.hidden)[-1]  # (dirs, B, H)
            pooled = last.transpose(0, 1).reshape(ids.shape[0], dirs * self.config.hidden)  # (B, dirs*H)
        vec = self.proj(pooled)  # (B, out_dim)
        return F.normalize(vec, dim=-1) if normalize else vec

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 256, normalize: bool = False) -> torch.Tensor:
        """Vectors (N, out_dim), float32 on CPU, in the order of `texts` (eval mode, no grad)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        was_training = self.training
        self.eval()
        try:
            parts = [self(self.tokenize(texts[i : i + batch_size]), normalize=normalize).float().cpu()
                     for i in range(0, len(texts), batch_size)]  # fmt: skip
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty((0, self.config.out_dim))

    def to_dict(self) -> dict[str, Any]:
        """Checkpoint contents: config and vocabulary (JSON-able) and the tensors (CPU)."""
        return {
            "config": self.config.to_dict(),
            "vocab": self.vocab.to_dict(),
            "tensors": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }


def scratch_text_from_state(
    config: Mapping[str, Any] | ScratchTextConfig, vocab: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> ScratchTextEncoder:
    """Rebuild an encoder from a checkpoint's config, vocabulary dict and tensors (strict keys)."""
    cfg = config if isinstance(config, ScratchTextConfig) else ScratchTextConfig.from_dict(config)
    model = ScratchTextEncoder(cfg, Vocabulary.from_dict(vocab))
    model.load_state_dict(dict(tensors), strict=True)
    return model.eval()
