"""Tests for training/ml/losses.py against slow, loop-based reference implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.ml.losses import hinge_loss, info_nce_loss, positive_mask


def _batch(seed: int, n_img: int = 5, n_txt: int = 9, dim: int = 8, dup: bool = True):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n_img, dim, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n_txt, dim, generator=g), dim=-1)
    image_ids = torch.arange(n_img) * 10
    if dup:
        image_ids[-1] = image_ids[0]  # the same image twice among the rows
    text_ids = image_ids[torch.randint(0, n_img, (n_txt,), generator=g)]
    text_ids[0] = 999  # a caption whose image is not in the batch: no positive
    return img, txt, image_ids, text_ids


def _ref_info_nce(img, txt, scale, iid, tid, mode):
    sim = [[scale * float(img[i] @ txt[t]) for t in range(len(txt))] for i in range(len(img))]

    def direction(rows):  # rows: list of (scores, positive flags)
        losses = []
        for scores, flags in rows:
            if not any(flags):
                continue
            log_z = math.log(sum(math.exp(s) for s in scores))
            if mode == "mean_log":
                losses.append(sum(log_z - s for s, f in zip(scores, flags) if f) / sum(flags))
            else:
                losses.append(log_z - math.log(sum(math.exp(s) for s, f in zip(scores, flags) if f)))
        return sum(losses) / len(losses)

    i2t = [(sim[i], [int(iid[i]) == int(tid[t]) for t in range(len(txt))]) for i in range(len(img))]
    t2i = [([sim[i][t] for i in range(len(img))], [int(iid[i]) == int(tid[t]) for i in range(len(img))])
           for t in range(len(txt))]
    return 0.5 * (direction(i2t) + direction(t2i))


def _ref_hinge(img, txt, iid, tid, margin, hardest):
    total, pairs = 0.0, 0
    for i in range(len(img)):
        for t in range(len(txt)):
            if int(iid[i]) != int(tid[t]):
                continue
            s = float(img[i] @ txt[t])
            neg_t = [max(0.0, margin - s + float(img[i] @ txt[u]))
                     for u in range(len(txt)) if int(tid[u]) != int(iid[i])]
            neg_i = [max(0.0, margin - s + float(img[j] @ txt[t]))
                     for j in range(len(img)) if int(iid[j]) != int(tid[t])]
            agg = max if hardest else sum
            total += (agg(neg_t) if neg_t else 0.0) + (agg(neg_i) if neg_i else 0.0)
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["mean_log", "log_sum"])
def test_info_nce_matches_slow_reference(seed: int, mode: str) -> None:
    img, txt, iid, tid = _batch(seed)
    scale = torch.tensor(7.5)
    out = info_nce_loss(img, txt, scale, iid, tid, positives=mode)
    assert out["contrastive_loss"].item() == pytest.approx(_ref_info_nce(img, txt, 7.5, iid, tid, mode), rel=1e-5)
    assert set(out) == {"contrastive_loss", "i2t_acc", "t2i_acc", "logit_scale"}


def test_info_nce_with_one_caption_per_image_equals_clip_loss() -> None:
    g = torch.Generator().manual_seed(3)
    img = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    ids = torch.arange(6)
    logits = 10.0 * img @ txt.T
    clip = 0.5 * (F.cross_entropy(logits, ids) + F.cross_entropy(logits.T, ids))
    out = info_nce_loss(img, txt, torch.tensor(10.0), ids, ids)
    assert out["contrastive_loss"].item() == pytest.approx(clip.item(), rel=1e-6)


def test_other_captions_of_the_same_image_are_not_negatives() -> None:
    # Two captions of image 0 identical to it: a multi-positive loss is lower than one that
    # treats the second caption as a negative would be.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    iid = torch.tensor([0, 1])
    tid = torch.tensor([0, 0, 1])
    multi = info_nce_loss(img, txt, torch.tensor(20.0), iid, tid, positives="log_sum")["contrastive_loss"]
    single = info_nce_loss(img, txt, torch.tensor(20.0), iid, torch.tensor([0, 5, 1]))["contrastive_loss"]
    assert multi.item() < 1e-6 < single.item()


def test_info_nce_accuracy_counts_top1_positives() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both captions look like image 0
    out = info_nce_loss(img, txt, torch.tensor(1.0), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert out["i2t_acc"].item() == pytest.approx(0.5)
    assert out["t2i_acc"].item() == pytest.approx(0.5)


def test_info_nce_gradient_reaches_logit_scale() -> None:
    img, txt, iid, tid = _batch(4)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    info_nce_loss(img, txt, log_scale.exp(), iid, tid)["contrastive_loss"].backward()
    assert log_scale.grad is not None and log_scale.grad.abs().item() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hardest", [True, False])
def test_hinge_matches_slow_reference(seed: int, hardest: bool) -> None:
    img, txt, iid, tid = _batch(seed)
    out = hinge_loss(img, txt, iid, tid, margin=0.2, hardest=hardest)
    assert out["hinge_loss"].item() == pytest.approx(_ref_hinge(img, txt, iid, tid, 0.2, hardest), rel=1e-5)
    assert 0.0 <= out["hinge_active"].item() <= 1.0


def test_hinge_is_zero_when_positives_beat_every_negative_by_the_margin() -> None:
    img = torch.eye(3)
    txt = torch.cat([torch.eye(3), torch.eye(3)])  # two captions per image, exact matches
    ids = torch.arange(3)
    out = hinge_loss(img, txt, ids, torch.cat([ids, ids]), margin=0.5)
    assert out["hinge_loss"].item() == 0.0 and out["hinge_active"].item() == 0.0


def test_positive_mask_marks_equal_ids() -> None:
    mask = positive_mask(torch.tensor([1, 2, 1]), torch.tensor([1, 3]))
    assert mask.tolist() == [[True, False], [False, False], [True, False]]
