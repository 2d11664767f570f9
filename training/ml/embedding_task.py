"""The joint-embedding TrainTask: cached encoder features -> JointEmbedding heads.

Data is ``EmbeddingData``: per image V cached feature views (view 0 = the plain image,
the others flips/crops), per caption its cached MiniLM vector and the index of its image.

Batches (``batch_size`` image rows each): every epoch each image appears
``ceil(5 / captions_per_image)`` times, each time with ``captions_per_image`` of its
captions (drawn cyclically from a fresh permutation), so several captions of one image sit
in the same batch and the losses treat them all as positives. Regularisation that matters
with only 6,000 training images:

- feature augmentation: each appearance uses a random cached view (``augment_views``);
- caption dropout: each epoch a random ``caption_dropout`` fraction of captions is left out
  (every image keeps at least one);
- optional Gaussian noise on cached text vectors; dropout and weight decay in the heads.

Under torch.distributed (see training.ml.distributed) the loss gathers every rank's
vectors first, so a DDP step computes the same global-batch loss as one process would.
Dev evaluation: view 0 of every dev image vs every dev caption, ``retrieval_metrics``
(R@1/5/10 both ways, medr, rsum). Pure: no Django.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from embeddings.ml.heads import EmbeddingConfig, JointEmbedding
from training.ml.config import EmbeddingTaskConfig
from training.ml.losses import hinge_loss, info_nce_loss
from training.ml.retrieval_metrics import retrieval_metrics


@dataclass(frozen=True)
class EmbeddingData:
    """Cached features of one split (float16 or float32, kept on CPU)."""

    image_feats: Tensor  # (N, V, 1280) pooled or (N, V, 49, 1280) spatial; view 0 = unaugmented
    text_feats: Tensor  # (M, 384)
    text_image: Tensor  # (M,) long: index in [0, N) of each caption's image

    def __post_init__(self) -> None:
        if self.image_feats.dim() not in (3, 4):
            raise ValueError(f"image_feats must be (N, V, F) or (N, V, C, F), got {tuple(self.image_feats.shape)}")
        if self.text_feats.dim() != 2 or self.text_image.shape != (self.text_feats.shape[0],):
            raise ValueError("text_feats must be (M, D) and text_image (M,)")
        if int(self.text_image.min()) < 0 or int(self.text_image.max()) >= self.num_images:
            raise ValueError("text_image indices out of range")
        if torch.bincount(self.text_image, minlength=self.num_images).min() == 0:
            raise ValueError("every image needs at least one caption")

    @property
    def num_images(self) -> int:
        return self.image_feats.shape[0]

    @property
    def num_views(self) -> int:
        return self.image_feats.shape[1]


class EmbeddingTask:
    """TrainTask for both embedding families; builds the model from ``model_config`` with ``seed``.

    ``make_model`` builds it instead (the "prior" family needs the frozen classifier and the
    class-name vectors, which only the caller has). ``extra_dev`` ({"ood": data}) are further
    evaluation sets scored beside dev every epoch (see ``evaluate``).
    """

    def __init__(self, model_config: EmbeddingConfig, task_config: EmbeddingTaskConfig, *,
                 batch_size: int, train: EmbeddingData, dev: EmbeddingData, seed: int = 0,
                 make_model: Callable[[EmbeddingConfig], nn.Module] | None = None,
                 extra_dev: Mapping[str, EmbeddingData] | None = None) -> None:
        if train.num_images < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {train.num_images} training images")
        if model_config.family == "prior" and make_model is None:
            raise ValueError("the prior family needs make_model (classifier and class-name vectors)")
        self.cfg = task_config
        self.batch_size = batch_size
        self.train_data, self.dev_data = train, dev
        self.extra_dev = dict(extra_dev or {})
        torch.manual_seed(seed)  # model init is part of the run's seed
        self.model = make_model(model_config) if make_model is not None else JointEmbedding(model_config)
        self.gate_bounds: dict[str, float] = {}
        calibrate = getattr(self.model, "calibrate", None)  # the gated families calibrate their gates
        if getattr(model_config, "gate", "none") != "none" and calibrate is not None:
            first = train.image_feats[:, 0].float()  # view 0
            pooled = first.mean(dim=1) if first.dim() == 3 else first  # (N, F)
            self.gate_bounds = calibrate(pooled, train.text_feats.float(), seed=seed)
        # Captions of each image, for sampling: list of 1-d long tensors.
        order = torch.argsort(train.text_image, stable=True)
        counts = torch.bincount(train.text_image, minlength=train.num_images).tolist()
        self._captions_of = list(torch.split(order, counts))
        self._repeats = math.ceil(5 / task_config.captions_per_image)

    def num_batches(self) -> int:
        return (self.train_data.num_images * self._repeats) // self.batch_size  # drop_last

    def _epoch_groups(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(G,) image index and (G, k) caption indices of every group in this epoch."""
        k, r = self.cfg.captions_per_image, self._repeats
        n_caps = self.train_data.text_feats.shape[0]
        keep = torch.rand(n_caps, generator=generator) >= self.cfg.caption_dropout  # (M,)
        images, caps = [], []
        for img, own in enumerate(self._captions_of):
            kept = own[keep[own]]
            if len(kept) == 0:  # never leave an image without captions
                kept = own[torch.randint(len(own), (1,), generator=generator)]
            perm = kept[torch.randperm(len(kept), generator=generator)]
            cyc = perm[torch.arange(r * k) % len(perm)].view(r, k)  # (r, k)
            caps.append(cyc)
            images.append(torch.full((r,), img, dtype=torch.long))
        return torch.cat(images), torch.cat(caps)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        img_idx, cap_idx = self._epoch_groups(generator)  # (G,), (G, k)
        order = torch.randperm(len(img_idx), generator=generator)
        n_views = self.train_data.num_views if self.cfg.augment_views else 1
        views = torch.randint(n_views, (len(img_idx),), generator=generator)  # one view per group
        bs = self.batch_size
        for b in range(self.num_batches()):
            sel = order[b * bs:(b + 1) * bs]  # (B,)
            imgs, caps = img_idx[sel], cap_idx[sel].reshape(-1)  # (B,), (B*k,)
            text = self.train_data.text_feats[caps].float()  # (B*k, D)
            if self.cfg.text_noise > 0:
                text = text + self.cfg.text_noise * torch.randn(text.shape, generator=generator)
            yield {
                "image": self.train_data.image_feats[imgs, views[sel]].float(),  # (B, F) or (B, C, F)
                "text": text,
                "image_id": imgs,
                "text_image_id": self.train_data.text_image[caps],
            }

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = model(batch["image"], batch["text"])
        img, txt = _gather(out["image_emb"]), _gather(out["text_emb"])
        iid, tid = _gather(batch["image_id"]), _gather(batch["text_image_id"])
        parts: dict[str, Tensor] = {}
        if self.cfg.loss in ("info_nce", "both"):
            parts.update(info_nce_loss(img, txt, out["logit_scale"], iid, tid,
                                       positives=self.cfg.positives, label_smoothing=self.cfg.label_smoothing))
        if self.cfg.loss in ("hinge", "both"):
            h = hinge_loss(img, txt, iid, tid, margin=self.cfg.hinge_margin, hardest=self.cfg.hinge_hardest)
            w = self.cfg.hinge_weight if self.cfg.loss == "both" else 1.0
            parts.update({"hinge_loss": w * h["hinge_loss"], "hinge_active": h["hinge_active"]})
        if "class_emb" in out and self.cfg.class_caption_weight > 0:
            parts["class_caption_loss"] = self.cfg.class_caption_weight * class_caption_loss(out)
        if "residual" in out and self.cfg.residual_l2 > 0:
            parts["residual_loss"] = self.cfg.residual_l2 * out["residual"].float().pow(2).sum(-1).mean()
        if "residual" in out:
            parts["residual_norm"] = out["residual"].detach().norm(dim=-1).mean()
        return parts

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Dev metrics; for each extra set its metrics as "<name>_<metric>"; and "both_rsum" =
        dev rsum + every extra set's rsum (early-stopping on it stops on both sets; with no
        extra set it is dev's rsum, so the same config trains where no OOD set exists)."""
        out = split_metrics(model, self.dev_data, batch_size=self.cfg.eval_batch_size)
        both = out["rsum"]
        for name, data in self.extra_dev.items():
            extra = split_metrics(model, data, batch_size=self.cfg.eval_batch_size)
            out.update({f"{name}_{k}": v for k, v in extra.items()})
            both += extra["rsum"]
        out["both_rsum"] = both
        return out


def split_metrics(model: nn.Module, data: EmbeddingData, *, batch_size: int = 1024) -> dict[str, float]:
    img, txt = encode_split(model, data, batch_size=batch_size)
    return retrieval_metrics(img.numpy(), txt.numpy(), data.text_image.numpy())


def class_caption_loss(out: Mapping[str, Tensor]) -> Tensor:
    """Soft cross-entropy of each image over the C class-name captions, targets = ConSE weights.

    out: "image_emb" (B, D), "class_emb" (C, D), "logits" (B, C) of the frozen classifier,
    "logit_scale". The targets are the top-k probabilities the model's own prior mixes, so
    the image stays nearest the class names the classifier believes in.
    """
    from embeddings.ml.prior_heads import conse_weights_dense

    core = out  # the model's named outputs
    target = conse_weights_dense(core["logits"].detach(), k=int(core["conse_k"]), temperature=float(core["conse_t"]))
    scores = core["logit_scale"].float() * core["image_emb"].float() @ core["class_emb"].float().T  # (B, C)
    return -(target * scores.log_softmax(dim=-1)).sum(dim=-1).mean()


@torch.no_grad()
def encode_split(model: nn.Module, data: EmbeddingData, *, batch_size: int = 1024,
                 view: int = 0) -> tuple[Tensor, Tensor]:
    """Unit vectors of every image (one view) and caption: (N, dim), (M, dim) float32 CPU."""
    core: Any = getattr(model, "module", model)  # unwrap DDP; any family's encode_image / encode_text
    was_training = core.training
    core.eval()
    device = next(core.parameters()).device
    imgs = [core.encode_image(data.image_feats[i:i + batch_size, view].float().to(device)).float().cpu()
            for i in range(0, data.num_images, batch_size)]
    txts = [core.encode_text(data.text_feats[i:i + batch_size].float().to(device)).float().cpu()
            for i in range(0, data.text_feats.shape[0], batch_size)]
    core.train(was_training)
    return torch.cat(imgs), torch.cat(txts)


def _gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` over ranks, keeping gradients to the local part; identity alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if x.requires_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns the local slice.

    Every rank computes the same global loss, so the local rows receive world_size times
    their true gradient; DDP's gradient averaging divides it back out.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # (n, D) -> (world * n, D)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def synthetic_embedding_data(n_images: int, *, captions: int = 5, views: int = 2, image_dim: int = 32,
                             text_dim: int = 16, latent: int = 8, spatial_cells: int = 0,
                             seed: int = 0, world_seed: int = 0) -> EmbeddingData:
    """Small learnable data for tests: images and captions are noisy maps of a shared latent.

    ``world_seed`` fixes the maps (keep it equal for train and dev), ``seed`` the samples.
    """
    world = np.random.default_rng(world_seed)
    a = world.standard_normal((latent, image_dim))
    b = world.standard_normal((latent, text_dim))
    rng = np.random.default_rng(seed + 1_000)
    z = rng.standard_normal((n_images, latent))
    base = np.maximum(z @ a, 0.0)  # (N, F) non-negative like ReLU6 features
    shape = (n_images, views, spatial_cells, image_dim) if spatial_cells else (n_images, views, image_dim)
    noise = 0.3 * rng.standard_normal(shape)
    img = (base[:, None, None, :] if spatial_cells else base[:, None, :]) + noise
    owner = np.repeat(np.arange(n_images), captions)
    txt = z[owner] @ b + 0.5 * rng.standard_normal((len(owner), text_dim))
    return EmbeddingData(torch.tensor(img, dtype=torch.float32), torch.tensor(txt, dtype=torch.float32),
                         torch.tensor(owner, dtype=torch.long))
