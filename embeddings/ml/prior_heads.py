"""Embedding heads that ADD to pretrained semantics: a ConSE prior plus learned residuals (issue 20).

The trained joint space (heads.py) reached Flickr8k's domain and lost everything else: its
image and text heads are free to forget what MiniLM and the ImageNet classifier knew. Here the
space is MiniLM's own (384-d) and training can only add a correction on top of it:

    image:  v = normalise(prior(x) + R_i(x))       x = pooled EfficientNet features (B, F)
    text:   t = normalise(s + R_t(s))              s = unit MiniLM sentence vector (B, 384)

- ``prior(x)`` (``prior="conse"``) is ConSE v0 computed inside the model: the frozen ImageNet
  classifier (a buffer) gives logits, their top-k softmax at temperature T weights the MiniLM
  vectors of the class names (a buffer), and the mix is L2-normalised. With ``prior="none"``
  there is no prior and the model is DeViSE: images mapped into the frozen text space.
- ``R_i`` and ``R_t`` are a LayerNorm + linear (+ GELU MLP) whose LAST layer starts at zero,
  so the untrained model IS ConSE v0 (image side) and plain MiniLM (text side), exactly; the
  trainer then regularises ``|R_i|^2`` so it moves only as far as the data pays for.

Every output is L2-normalised. ``class_text`` puts the class-name vectors through the text
side, for the weak "class names as captions" loss.

Gated residuals (``gate="image"`` or ``"both"``): a residual learned on 6,000 Flickr8k photos
says nothing about a drawing, and adding it there only blurs the prior (measured: every
ungated variant scored BELOW ConSE v0 on the out-of-domain set). ``calibrate`` fits
``gate_centroids`` spherical k-means centroids to the training features and the gate
``g(x) = clamp((max_c cos(x, c) - lo) / (hi - lo), 0, 1)`` with ``hi`` the training set's 10th
percentile of that similarity and ``lo = hi - gate_width * (P50 - P10)``, from the training
data alone; then ``v = normalise(prior + g(x) R_i(x))`` (text likewise).

Learned fusion (``joint_dim > 0``): a free joint space (JointEmbedding's heads) beside the
MiniLM-space part, concatenated with weights so that one inner product is the fused score:

    image = normalise([sqrt(w) v ; sqrt(1 - w) g(x) j_i(x)])   text = [sqrt(w) t ; sqrt(1 - w) j_t(s)]

(``w = prior_weight``; ``v``, ``t``, ``j_i``, ``j_t`` unit vectors; text has norm 1). Far from
the training data g = 0 and the image is its ConSE vector: the joint part, which knows only
Flickr8k, cannot drag it down there. Pure PyTorch (no Django).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embeddings.ml.heads import EmbeddingConfig, ProjectionHead

__all__ = ["PriorEmbedding", "Residual", "conse_mix", "spherical_kmeans"]


def spherical_kmeans(x: Tensor, k: int, *, iters: int = 20, seed: int = 0) -> Tensor:
    """(N, W) unit vectors -> (min(k, N), W) unit centroids (cosine k-means, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    k = min(k, x.shape[0])
    cents = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    for _ in range(iters):
        assign = (x @ cents.T).argmax(dim=-1)  # (N,)
        sums = torch.zeros_like(cents).index_add_(0, assign, x)
        empty = sums.norm(dim=-1) == 0
        sums[empty] = cents[empty]  # keep a centroid that lost all its points
        cents = F.normalize(sums, dim=-1)
    return cents


def conse_mix(logits: Tensor, class_vecs: Tensor, *, k: int, temperature: float) -> Tensor:
    """(..., C) logits -> (..., D) unit ConSE vectors, as embeddings.ml.conse.conse_image_vectors.

    softmax(logits / T) kept on the top k classes, renormalised to sum 1, times the (C, D)
    class-name vectors, then L2-normalised. Ties at the k-th place pick an arbitrary member,
    as argpartition does in the numpy reference.
    """
    probs = (logits.float() / temperature).softmax(dim=-1)  # (..., C)
    top, idx = probs.topk(k, dim=-1)  # (..., k)
    weights = top / top.sum(dim=-1, keepdim=True)
    mixed = torch.einsum("...k,...kd->...d", weights, class_vecs[idx])  # (..., D)
    return F.normalize(mixed, dim=-1)


def conse_weights_dense(logits: Tensor, *, k: int, temperature: float) -> Tensor:
    """(B, C) convex ConSE weights (zeros outside the top k): the soft targets of the class loss."""
    probs = (logits.float() / temperature).softmax(dim=-1)
    top, idx = probs.topk(k, dim=-1)
    return torch.zeros_like(probs).scatter_(-1, idx, top / top.sum(dim=-1, keepdim=True))


class Residual(nn.Module):
    """(..., in) -> (..., out) correction; the last layer is zero-initialised (starts as 0)."""

    def __init__(self, in_dim: int, out_dim: int, cfg: EmbeddingConfig, *, zero_init: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.head == "mlp":
            self.net: nn.Module = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                                nn.Linear(cfg.hidden, out_dim))
            last = cast(nn.Linear, self.net[-1])  # Sequential indexing is typed as a plain Module
        else:
            self.net = last = nn.Linear(in_dim, out_dim)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.drop(self.norm(x)))


class PriorEmbedding(nn.Module):
    """ConSE-prior residual (or DeViSE) model; same interface as heads.JointEmbedding."""

    # Buffers registered in __init__ (nn.Module.__getattr__ would type them Tensor | Module).
    class_vecs: Tensor  # (C, D)
    fc_weight: Tensor  # (C, F)
    fc_bias: Tensor  # (C,)

    def __init__(self, config: EmbeddingConfig, *, class_vecs: Tensor, fc_weight: Tensor, fc_bias: Tensor) -> None:
        super().__init__()
        if config.family != "prior":
            raise ValueError("PriorEmbedding needs an EmbeddingConfig with family='prior'")
        c, d, f = config.num_classes, config.text_dim, config.image_dim
        if class_vecs.shape != (c, d) or fc_weight.shape != (c, f) or fc_bias.shape != (c,):
            raise ValueError(f"need class_vecs ({c}, {d}), fc_weight ({c}, {f}), fc_bias ({c},); got "
                             f"{tuple(class_vecs.shape)}, {tuple(fc_weight.shape)}, {tuple(fc_bias.shape)}")
        self.config = config
        # Frozen pretrained knowledge, saved in the checkpoint so it loads from its own contents.
        self.register_buffer("class_vecs", F.normalize(class_vecs.float(), dim=-1))  # (C, D)
        self.register_buffer("fc_weight", fc_weight.float())  # (C, F)
        self.register_buffer("fc_bias", fc_bias.float())  # (C,)
        # DeViSE has no prior to start from: its map must not start at zero.
        self.image_residual = Residual(f, d, config, zero_init=config.prior == "conse")
        self.text_residual = Residual(d, d, config) if config.text_residual else None
        init = math.log(1.0 / config.init_temperature)
        self.log_logit_scale = nn.Parameter(torch.tensor(init), requires_grad=config.learn_temperature)
        self.joint_image = ProjectionHead(f, config.joint_dim, config) if config.joint_dim else None
        self.joint_text = ProjectionHead(d, config.joint_dim, config) if config.joint_dim else None
        k = config.gate_centroids
        # Gate state (buffers, in the checkpoint); lo = -2 < any cosine: the gate is open until calibrated.
        for side, width in (("image", f), ("text", d)):
            self.register_buffer(f"{side}_centroids", torch.zeros(k, width))
            self.register_buffer(f"{side}_gate_bounds", torch.tensor([-2.0, -1.0]))  # (lo, hi)

    @classmethod
    def empty(cls, config: EmbeddingConfig) -> PriorEmbedding:
        """A model of the right shapes whose buffers a checkpoint's tensors will overwrite."""
        c, d, f = config.num_classes, config.text_dim, config.image_dim
        return cls(config, class_vecs=torch.ones(c, d), fc_weight=torch.zeros(c, f), fc_bias=torch.zeros(c))

    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def _gated(self, side: str) -> bool:
        return self.config.gate == "both" or (self.config.gate == "image" and side == "image")

    def gate(self, x: Tensor, side: str) -> Tensor:
        """(..., W) inputs -> (..., 1) residual weights in [0, 1] (ones when this side is ungated)."""
        if not self._gated(side):
            return x.new_ones((*x.shape[:-1], 1)).float()
        cents, (lo, hi) = getattr(self, f"{side}_centroids"), getattr(self, f"{side}_gate_bounds")
        sim = (F.normalize(x.float(), dim=-1) @ cents.T).max(dim=-1, keepdim=True).values  # (..., 1)
        return ((sim - lo) / (hi - lo).clamp(min=1e-6)).clamp(0.0, 1.0)

    @torch.no_grad()
    def calibrate(self, image_feats: Tensor, text_feats: Tensor, *, seed: int = 0) -> dict[str, float]:
        """Fit the gates to TRAINING features: image (N, F) pooled, text (M, D). Returns the bounds."""
        out: dict[str, float] = {}
        for side, x in (("image", image_feats), ("text", text_feats)):
            if not self._gated(side):
                continue
            unit = F.normalize(x.float(), dim=-1)
            cents = spherical_kmeans(unit, self.config.gate_centroids, seed=seed)
            if cents.shape[0] < self.config.gate_centroids:  # fewer points than centroids: repeat some
                cents = cents[torch.arange(self.config.gate_centroids) % cents.shape[0]]
            sim = (unit @ cents.T).max(dim=-1).values
            p10, p50 = torch.quantile(sim, 0.10), torch.quantile(sim, 0.50)
            lo = p10 - self.config.gate_width * (p50 - p10)
            getattr(self, f"{side}_centroids").copy_(cents)
            getattr(self, f"{side}_gate_bounds").copy_(torch.stack([lo, p10]))
            out.update({f"{side}_gate_lo": float(lo), f"{side}_gate_hi": float(p10)})
        return out

    def classifier_logits(self, feats: Tensor) -> Tensor:
        """(..., F) features -> (..., C) ImageNet logits of the frozen classifier."""
        return F.linear(feats.float(), self.fc_weight, self.fc_bias)

    def prior_vector(self, feats: Tensor) -> Tensor:
        """(..., F) -> (..., D): the ConSE v0 vector (unit), or zeros for DeViSE."""
        if self.config.prior == "none":
            return feats.new_zeros((*feats.shape[:-1], self.config.text_dim)).float()
        return conse_mix(self.classifier_logits(feats), self.class_vecs,
                         k=self.config.conse_k, temperature=self.config.conse_temperature)

    def _pool(self, feats: Tensor) -> Tensor:
        if feats.dim() == 3:
            return feats.mean(dim=1)  # (B, C, F) cells -> the pooled vector
        if feats.dim() != 2:
            raise ValueError(f"image features must be (B, F) or (B, C, F), got {tuple(feats.shape)}")
        return feats

    def image_parts(self, feats: Tensor) -> dict[str, Tensor]:
        """{"prior": (B, D), "residual": (B, D), "image_emb": (B, D) unit} from (B, F) or (B, C, F)."""
        pooled = self._pool(feats).float()
        prior = self.prior_vector(pooled)
        gate = self.gate(pooled, "image")
        residual = gate * self.image_residual(pooled)
        emb = self._fuse_image(F.normalize(prior + residual, dim=-1), pooled, gate)
        return {"prior": prior, "residual": residual, "image_emb": emb}

    def _fuse_image(self, v: Tensor, x: Tensor, gate: Tensor) -> Tensor:
        """(..., D) unit prior-side vectors -> the model's (..., dim) unit image vectors."""
        if self.joint_image is None:
            return v
        w = self.config.prior_weight
        j = F.normalize(self.joint_image(x), dim=-1)  # (..., joint_dim)
        return F.normalize(torch.cat([math.sqrt(w) * v, math.sqrt(1 - w) * gate * j], dim=-1), dim=-1)

    def encode_image(self, feats: Tensor) -> Tensor:
        return self.image_parts(feats)["image_emb"]

    def encode_text(self, feats: Tensor) -> Tensor:
        """(B, 384) MiniLM sentence vectors -> (B, 384) unit vectors."""
        if feats.dim() != 2:
            raise ValueError(f"text features must be (B, {self.config.text_dim}), got {tuple(feats.shape)}")
        base = F.normalize(feats.float(), dim=-1)
        t = base
        if self.text_residual is not None:
            t = F.normalize(base + self.gate(base, "text") * self.text_residual(base), dim=-1)
        if self.joint_text is None:
            return t
        w = self.config.prior_weight
        j = F.normalize(self.joint_text(base), dim=-1)
        return torch.cat([math.sqrt(w) * t, math.sqrt(1 - w) * j], dim=-1)  # norm 1

    def class_text(self) -> Tensor:
        """(C, D') class-name vectors through the text side (the weak captions' embeddings)."""
        return self.encode_text(self.class_vecs)

    def project_spatial(self, spatial: Tensor) -> dict[str, Tensor]:
        """(B, C, F) cells -> {"cell_emb": (B, C, D) unit, "cell_weight": (B, C) uniform}.

        Each cell is treated as an image: its own ConSE vector (the classifier is linear, so
        the mean of cell logits is the pooled logits) plus its residual.
        """
        if spatial.dim() != 3:
            raise ValueError(f"spatial features must be (B, C, F), got {tuple(spatial.shape)}")
        cells = spatial.float()
        gate = self.gate(cells, "image")
        emb = F.normalize(self.prior_vector(cells) + gate * self.image_residual(cells), dim=-1)
        emb = self._fuse_image(emb, cells, gate)
        weight = torch.full(spatial.shape[:2], 1.0 / spatial.shape[1], device=spatial.device)
        return {"cell_emb": emb, "cell_weight": weight}

    def forward(self, image_feats: Tensor | None = None, text_feats: Tensor | None = None) -> dict[str, Tensor]:
        """Named outputs: "image_emb", "prior", "residual", "logits" (B_i, ...), "text_emb", "class_emb"."""
        out: dict[str, Tensor] = {"logit_scale": self.logit_scale()}
        if image_feats is not None:
            pooled = self._pool(image_feats).float()
            out.update(self.image_parts(pooled))
            out["logits"] = self.classifier_logits(pooled)
            # Scalars the trainer's class-caption loss needs to rebuild the prior's weights.
            out["conse_k"] = torch.tensor(self.config.conse_k)
            out["conse_t"] = torch.tensor(self.config.conse_temperature)
        if text_feats is not None:
            out["text_emb"] = self.encode_text(text_feats)
            out["class_emb"] = self.class_text()
        return out
