"""Joint image-text embedding heads over frozen encoder features.

The encoders (EfficientNet-Lite0 for images, MiniLM for text) are frozen and their outputs
cached; what we learn here is small: one head per modality mapping those features into a
shared ``dim``-wide space where matching pairs have high cosine similarity, plus a learned
logit scale (1 / temperature) for the contrastive loss.

Image input is either the pooled 1280-d vector or the 7x7 = 49 spatial cells (B, 49, 1280)
pooled by a learned attention (the pooled vector is the plain mean of those cells, so
attention pooling is a strict generalisation). Either way ``project_spatial`` maps each cell
through the image head, giving per-cell vectors in the joint space: their cosine with a
query's text vector is the "why this match" heatmap.

Every output vector is L2-normalised, as the search index expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embeddings.ml.config_dict import dataclass_from_dict, dataclass_to_dict

if TYPE_CHECKING:
    from embeddings.ml.prior_heads import PriorEmbedding  # imports this module

HeadType = Literal["linear", "mlp"]
ImageInput = Literal["pooled", "spatial"]
Family = Literal["joint", "prior"]
Prior = Literal["conse", "none"]


@dataclass(frozen=True)
class EmbeddingConfig:
    """Shape of the joint embedding model; saved inside every checkpoint.

    ``family`` "joint" is the learned shared space below; "prior" (embeddings/ml/prior_heads.py)
    lives in MiniLM's own space (``dim`` = ``text_dim``) and only ADDS a zero-initialised residual
    to a pretrained image vector (ConSE, or nothing for DeViSE) and, optionally, to the text.
    """

    family: Family = "joint"
    dim: int = 512  # width of the joint space (the "prior" family uses text_dim)
    head: HeadType = "mlp"  # "linear", or "mlp" = linear skip + 2-layer residual branch
    hidden: int = 1024  # hidden width of the MLP branch
    dropout: float = 0.2  # on head inputs and the MLP hidden layer (6k images overfit fast)
    input_norm: bool = True  # LayerNorm on the frozen features before the heads
    image_input: ImageInput = "pooled"  # "pooled" 1280-d vector or "spatial" 49x1280 cells
    image_dim: int = 1280  # EfficientNet-Lite0 feature width
    spatial_cells: int = 49  # 7 x 7 final feature map
    attn_hidden: int = 256  # hidden width of the attention scorer (spatial input only)
    text_dim: int = 384  # MiniLM sentence vector width
    init_temperature: float = 0.07  # CLIP's starting temperature
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # clamp on 1 / temperature, as in CLIP
    # "prior" family only:
    prior: Prior = "conse"  # image vector = normalise(prior + residual); "none" = DeViSE (residual only)
    text_residual: bool = True  # text = normalise(MiniLM + zero-initialised residual); False = MiniLM itself
    num_classes: int = 1000  # ImageNet classes of the frozen classifier and their name vectors
    conse_k: int = 5  # ConSE v0's top-k (embeddings/ml/conse.py DEFAULT_K)
    conse_temperature: float = 2.0  # ConSE v0's softmax temperature (DEFAULT_TEMPERATURE)
    # Where the residuals apply: "none" everywhere; "image" / "both" scale the image (and text)
    # residual by how close the input is to the TRAINING data (cosine to the nearest of
    # gate_centroids k-means centroids of the training features): fully on inside the bulk
    # of the training distribution, off outside it, so far from Flickr8k the model stays ConSE.
    gate: Literal["none", "image", "both"] = "none"
    gate_centroids: int = 64
    gate_width: float = 1.0  # gate falls 1 -> 0 over this many (P50 - P10) widths below P10
    # Learned fusion: a gated joint part (heads as in JointEmbedding, joint_dim wide) beside the
    # MiniLM-space part; score = prior_weight * <prior side> + (1 - prior_weight) * <joint side>.
    # 0 = off. With it, dim must be text_dim + joint_dim.
    joint_dim: int = 0
    prior_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.image_dim < 1 or self.text_dim < 1:
            raise ValueError("dim, hidden, image_dim and text_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.head not in ("linear", "mlp") or self.image_input not in ("pooled", "spatial"):
            raise ValueError(f"bad head {self.head!r} or image_input {self.image_input!r}")
        if not (self.init_temperature > 0.0 and 1.0 / self.init_temperature <= self.max_logit_scale):
            raise ValueError("need 0 < init_temperature and 1/init_temperature <= max_logit_scale")
        if self.family not in ("joint", "prior") or self.prior not in ("conse", "none"):
            raise ValueError(f"bad family {self.family!r} or prior {self.prior!r}")
        if self.family == "prior" and self.dim != self.text_dim + self.joint_dim:
            raise ValueError("the prior family lives in the text space: dim must equal text_dim (+ joint_dim)")
        if self.joint_dim < 0 or not 0.0 < self.prior_weight <= 1.0:
            raise ValueError("joint_dim must be >= 0 and prior_weight in (0, 1]")
        if self.gate not in ("none", "image", "both") or self.gate_centroids < 1 or self.gate_width <= 0:
            raise ValueError("gate must be none|image|both, gate_centroids >= 1, gate_width > 0")
        if not 1 <= self.conse_k <= self.num_classes or self.conse_temperature <= 0:
            raise ValueError("need 1 <= conse_k <= num_classes and conse_temperature > 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingConfig:
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict:
        return dataclass_to_dict(self)


class ProjectionHead(nn.Module):
    """features (..., in_dim) -> (..., out_dim), not normalised.

    "mlp" adds a residual 2-layer branch to the linear map: the linear part alone is a strong
    baseline on frozen features, the branch learns what it cannot.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: EmbeddingConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp: nn.Module | None = None
        if cfg.head == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, out_dim),
            )

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.norm(x))
        out = self.linear(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        return out


class AttentionPool(nn.Module):
    """(B, C, F) cells -> (B, F) weighted mean, weights from a small scorer softmaxed over C.

    The scorer's last layer starts at zero so training begins from the plain mean (= the
    pooled vector) and only moves away from it where that helps.
    """

    def __init__(self, feat_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(feat_dim)
        self.score = nn.Sequential(nn.Linear(feat_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        last = cast(nn.Linear, self.score[-1])  # Sequential indexing is typed as a plain Module
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def weights(self, cells: Tensor) -> Tensor:
        return self.score(self.norm(cells)).squeeze(-1).softmax(dim=-1)  # (B, C)

    def forward(self, cells: Tensor) -> Tensor:
        return torch.einsum("bc,bcf->bf", self.weights(cells), cells)  # (B, F)


class JointEmbedding(nn.Module):
    """Image head + text head -> L2-normalised ``dim``-wide vectors, and a logit scale."""

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__()
        self.config = config
        self.image_head = ProjectionHead(config.image_dim, config.dim, config)
        self.text_head = ProjectionHead(config.text_dim, config.dim, config)
        self.image_pool = (AttentionPool(config.image_dim, config.attn_hidden)
                           if config.image_input == "spatial" else None)
        init = math.log(1.0 / config.init_temperature)
        self.log_logit_scale = nn.Parameter(torch.tensor(init), requires_grad=config.learn_temperature)

    def logit_scale(self) -> Tensor:
        """exp(log scale), clamped as in CLIP so the softmax cannot become a hard max."""
        return self.log_logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def encode_image(self, feats: Tensor) -> Tensor:
        """(B, 1280) pooled or (B, 49, 1280) spatial features -> (B, dim) unit vectors."""
        if feats.dim() == 3:
            pooled = self.image_pool(feats) if self.image_pool is not None else feats.mean(dim=1)
        elif feats.dim() == 2:
            if self.image_pool is not None:
                raise ValueError("this model pools spatial cells: pass (B, 49, 1280) features")
            pooled = feats
        else:
            raise ValueError(f"image features must be (B, F) or (B, C, F), got {tuple(feats.shape)}")
        return F.normalize(self.image_head(pooled), dim=-1)

    def encode_text(self, feats: Tensor) -> Tensor:
        """(B, 384) sentence vectors -> (B, dim) unit vectors."""
        if feats.dim() != 2:
            raise ValueError(f"text features must be (B, {self.config.text_dim}), got {tuple(feats.shape)}")
        return F.normalize(self.text_head(feats), dim=-1)

    def project_spatial(self, spatial: Tensor) -> dict[str, Tensor]:
        """Per-cell joint-space vectors for the "why this match" heatmap.

        spatial (B, 49, 1280) -> {"cell_emb": (B, 49, dim) unit vectors, "cell_weight":
        (B, 49) pooling weights (uniform for a pooled-input model)}. The heatmap of a query
        with unit vector q is ``cell_emb @ q`` reshaped to 7x7.
        """
        if spatial.dim() != 3:
            raise ValueError(f"spatial features must be (B, C, F), got {tuple(spatial.shape)}")
        cells = F.normalize(self.image_head(spatial), dim=-1)  # (B, C, dim)
        if self.image_pool is not None:
            weight = self.image_pool.weights(spatial)
        else:
            weight = torch.full(spatial.shape[:2], 1.0 / spatial.shape[1], device=spatial.device)
        return {"cell_emb": cells, "cell_weight": weight}

    def forward(self, image_feats: Tensor | None = None, text_feats: Tensor | None = None) -> dict[str, Tensor]:
        """Named outputs: "image_emb" (B_i, dim), "text_emb" (B_t, dim), "logit_scale" ()."""
        out: dict[str, Tensor] = {"logit_scale": self.logit_scale()}
        if image_feats is not None:
            out["image_emb"] = self.encode_image(image_feats)
        if text_feats is not None:
            out["text_emb"] = self.encode_text(text_feats)
        return out


def embedding_from_state(
    config: Mapping[str, Any] | EmbeddingConfig, tensors: Mapping[str, Tensor]
) -> JointEmbedding | PriorEmbedding:
    """Rebuild a model of either family from a checkpoint's config dict and tensors (strict key match)."""
    cfg = config if isinstance(config, EmbeddingConfig) else EmbeddingConfig.from_dict(config)
    if cfg.family == "prior":
        from embeddings.ml.prior_heads import PriorEmbedding

        model: JointEmbedding | PriorEmbedding = PriorEmbedding.empty(cfg)
    else:
        model = JointEmbedding(cfg)
    model.load_state_dict(dict(tensors), strict=True)
    return model.eval()


__all__ = ["EmbeddingConfig", "JointEmbedding", "ProjectionHead", "AttentionPool", "embedding_from_state"]
