"""Contrastive losses for the joint embedding, aware of several captions per image.

A batch holds image vectors (B_i, D) and caption vectors (B_t, D) plus, for each, the id of
the image it belongs to. Flickr8k has five captions per image and a batch may hold several
of them, or the same image twice; treating those as negatives would push true matches
apart, so every (image, caption) pair with equal image ids is a POSITIVE.

- ``info_nce_loss``: symmetric InfoNCE (CLIP) with a learned logit scale. Each anchor's loss
  is the mean over its positives of -log softmax (SupCon's "L_out"), or with
  ``positives="log_sum"`` -log of the summed softmax mass on its positives ("L_in").
- ``hinge_loss``: VSE++ hinge with the hardest in-batch negative per positive pair (or the
  sum over all negatives, VSE0), both directions.

Both return named parts: keys ending in ``_loss`` are optimised (the trainer sums them),
the others are logged. Everything is computed in float32 even under autocast.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def positive_mask(image_ids: Tensor, text_image_ids: Tensor) -> Tensor:
    """(B_i,), (B_t,) ids -> (B_i, B_t) bool, True where caption t describes image i."""
    return image_ids[:, None] == text_image_ids[None, :]


def info_nce_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
    image_ids: Tensor,
    text_image_ids: Tensor,
    *,
    positives: Literal["mean_log", "log_sum"] = "mean_log",
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """Symmetric multi-positive InfoNCE. Returns contrastive_loss, i2t_acc, t2i_acc, logit_scale.

    image_emb (B_i, D), text_emb (B_t, D) unit vectors; logit_scale () = 1 / temperature.
    Anchors without any positive in the batch are left out of the mean.
    ``label_smoothing`` moves that much target mass from the positives to all candidates.
    """
    pos = positive_mask(image_ids, text_image_ids)  # (B_i, B_t)
    logits = logit_scale.float() * image_emb.float() @ text_emb.float().T  # (B_i, B_t)
    l_i2t = _multi_positive_ce(logits, pos, positives, label_smoothing)
    l_t2i = _multi_positive_ce(logits.T, pos.T, positives, label_smoothing)
    return {
        "contrastive_loss": 0.5 * (l_i2t + l_t2i),
        "i2t_acc": _top1_hit(logits, pos),
        "t2i_acc": _top1_hit(logits.T, pos.T),
        "logit_scale": logit_scale.detach().float(),
    }


def _multi_positive_ce(logits: Tensor, pos: Tensor, mode: str, smoothing: float) -> Tensor:
    """Rows are anchors, columns candidates; mean over anchors that have a positive."""
    logp = logits.log_softmax(dim=1)  # (R, C)
    n_pos = pos.sum(dim=1)  # (R,)
    has = n_pos > 0
    if mode == "mean_log":
        per_row = -(logp * pos).sum(dim=1) / n_pos.clamp(min=1)  # (R,)
    elif mode == "log_sum":
        per_row = -torch.logsumexp(logp.masked_fill(~pos, float("-inf")), dim=1)
        per_row = per_row.masked_fill(~has, 0.0)
    else:
        raise ValueError(f"positives must be 'mean_log' or 'log_sum', got {mode!r}")
    if smoothing > 0.0:
        per_row = (1.0 - smoothing) * per_row - smoothing * logp.mean(dim=1)
    return per_row[has].mean() if bool(has.any()) else logits.sum() * 0.0


def _top1_hit(logits: Tensor, pos: Tensor) -> Tensor:
    """Fraction of anchors whose best-scoring candidate is a positive."""
    best = logits.argmax(dim=1)  # (R,)
    has = pos.any(dim=1)
    hit = pos[torch.arange(len(best), device=best.device), best]
    return hit[has].float().mean().detach() if bool(has.any()) else logits.new_zeros(())


def hinge_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    image_ids: Tensor,
    text_image_ids: Tensor,
    *,
    margin: float = 0.2,
    hardest: bool = True,
) -> dict[str, Tensor]:
    """VSE++ hinge loss, multi-positive aware. Returns hinge_loss, hinge_active.

    For every positive pair (i, t) with score s = <i, t>:
    caption side  [margin - s + <i, t'>]_+  over negative captions t' of image i,
    image side    [margin - s + <i', t>]_+  over negative images i' of caption t,
    taking the max over negatives (``hardest``, VSE++) or their sum (VSE0). The loss is the
    mean over positive pairs. "hinge_active" logs the fraction of pairs with non-zero cost.
    """
    pos = positive_mask(image_ids, text_image_ids)  # (B_i, B_t)
    sim = image_emb.float() @ text_emb.float().T  # (B_i, B_t)
    neg_inf = torch.finfo(sim.dtype).min
    if hardest:
        # Hardest negative caption per image row, hardest negative image per caption column.
        hard_t = sim.masked_fill(pos, neg_inf).max(dim=1, keepdim=True).values  # (B_i, 1)
        hard_i = sim.masked_fill(pos, neg_inf).max(dim=0, keepdim=True).values  # (1, B_t)
        cost = (margin - sim + hard_t).clamp(min=0) + (margin - sim + hard_i).clamp(min=0)  # (B_i, B_t)
    else:
        # cost[i, t] = sum over negatives t' of [m - s_it + s_it']_+ plus the image side.
        neg = (~pos).float()
        c_t = ((margin - sim[:, :, None] + sim[:, None, :]).clamp(min=0) * neg[:, None, :]).sum(-1)
        c_i = ((margin - sim[:, :, None] + sim.T[None, :, :]).clamp(min=0) * neg.T[None, :, :]).sum(-1)
        cost = c_t + c_i  # (B_i, B_t)
    cost = cost * pos  # only positive pairs are anchors
    n_pairs = pos.sum().clamp(min=1)
    return {
        "hinge_loss": cost.sum() / n_pairs,
        "hinge_active": ((cost > 0) & pos).sum().float().detach() / n_pairs,
    }
