"""Self-critical sequence training (Rennie et al. 2017, "Self-critical Sequence Training for Image
Captioning") for the caption decoders of ``embeddings.ml.captioner``.

For each image the decoder samples ``k`` captions (multinomial, from its own word distribution,
dropout on as in training); each sample's reward is its CIDEr-D against the image's reference
captions (``training.ml.cider_reward``: document frequencies of the training references), and
the loss is the REINFORCE estimate with a baseline,

    loss = -mean over samples of (r - b) * sum_t log p(w_t)

where the baseline ``b`` is either the reward of the image's greedy decode (the paper's "self-
critical" baseline, decoded in eval mode without gradient) or the mean reward of the image's
OTHER samples (``"mean"``, the "new self-critical" variant of Luo 2020, ruotianluo/self-
critical.pytorch's ``--train_sample_n`` with ``sc_baseline_type=avg_rest``: no greedy decode,
needs k >= 2). The sampled tokens obey the same rules as decoding
(``embeddings.ml.caption_decoding``): never <pad>/<bos>/<unk>, no empty caption, <eos> forced at
the last position, so what is rewarded is what the product can output.

Pure: no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from embeddings.ml.caption_decoding import greedy_decode
from embeddings.ml.captioner import CaptionDecoder
from embeddings.ml.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocabulary
from training.ml.cider_reward import CiderD

Baseline = Literal["greedy", "mean"]


@dataclass(frozen=True)
class Samples:
    """``k`` sampled captions per image, image-major: rows i*k .. i*k+k-1 belong to image i."""

    tokens: Tensor  # (B*k, T) token ids, <eos> included, PAD after it
    log_probs: Tensor  # (B*k,) sum of the sampled tokens' log-probabilities (<eos> included), with grad
    lengths: Tensor  # (B*k,) tokens per row, <eos> included


def _banned(vocab_size: int, device: torch.device) -> Tensor:
    """(V,) additive mask: -inf on tokens that are never generated."""
    mask = torch.zeros(vocab_size, device=device)
    mask[[PAD_ID, BOS_ID, UNK_ID]] = float("-inf")
    return mask


def sample_captions(decoder: CaptionDecoder, pooled: Tensor, spatial: Tensor | None, *, samples: int,
                    max_len: int, generator: torch.Generator | None = None) -> Samples:
    """Sample ``samples`` captions per image (B images) with gradients through their log-probs."""
    if samples < 1 or max_len < 1:
        raise ValueError(f"need samples >= 1 and max_len >= 1, got {samples}, {max_len}")
    device = pooled.device
    rows = pooled.shape[0] * samples
    memory = tuple(m.repeat_interleave(samples, dim=0) for m in decoder.encode(pooled, spatial))  # (B*k, ...)
    state = decoder.init_state(memory)
    tokens = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    banned = None
    picked: list[Tensor] = []
    logps: list[Tensor] = []
    for t in range(max_len):
        logits, state, _ = decoder.step(tokens, state, memory)  # (B*k, V)
        if banned is None:
            banned = _banned(logits.shape[-1], device)
        bias = banned.clone()
        if t == 0:
            bias[EOS_ID] = float("-inf")  # no empty captions
        if t == max_len - 1:
            bias = torch.full_like(bias, float("-inf"))
            bias[EOS_ID] = 0.0  # the last position can only end the caption
        logp = F.log_softmax(logits.float() + bias, dim=-1)  # (B*k, V)
        with torch.no_grad():
            choice = torch.multinomial(logp.exp().cpu(), 1, generator=generator).squeeze(1).to(device)  # (B*k,)
        choice = torch.where(done, torch.full_like(choice, PAD_ID), choice)
        step_logp = logp.gather(1, choice.unsqueeze(1)).squeeze(1)  # (B*k,)
        logps.append(torch.where(done, torch.zeros_like(step_logp), step_logp))
        picked.append(choice)
        done = done | (choice == EOS_ID)
        tokens = choice
        if bool(done.all()):
            break
    out = torch.stack(picked, dim=1)  # (B*k, T)
    lengths = (out != PAD_ID).sum(dim=1)
    return Samples(tokens=out, log_probs=torch.stack(logps, dim=1).sum(dim=1), lengths=lengths)


def scst_loss(decoder: CaptionDecoder, pooled: Tensor, spatial: Tensor | None, images: Sequence[int], *,
              vocab: Vocabulary, cider: CiderD, samples: int, max_len: int, baseline: Baseline = "greedy",
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Named parts for one batch of images (``images`` index ``cider``'s reference corpus).

    ``scst_loss`` is optimised; ``scst_reward`` (mean CIDEr-D of the samples), ``scst_baseline``
    (mean baseline) and ``scst_greedy`` (mean CIDEr-D of the greedy decodes, "greedy" only)
    are logged, on pycocoevalcap's raw scale.
    """
    if baseline not in ("greedy", "mean"):
        raise ValueError(f"unknown baseline {baseline!r} (expected 'greedy' or 'mean')")
    if baseline == "mean" and samples < 2:
        raise ValueError("the 'mean' baseline needs at least 2 samples per image")
    images = [int(i) for i in images]
    drawn = sample_captions(decoder, pooled, spatial, samples=samples, max_len=max_len, generator=generator)
    texts = [vocab.decode(row) for row in drawn.tokens.tolist()]
    reward = torch.tensor(cider.score(texts, [i for i in images for _ in range(samples)]),
                          device=pooled.device).view(-1, samples)  # (B, k)
    parts: dict[str, Tensor] = {}
    if baseline == "greedy":
        was_training = decoder.training
        decoder.eval()
        greedy = greedy_decode(decoder, pooled, spatial, max_len=max_len)  # no_grad inside
        decoder.train(was_training)
        greedy_reward = torch.tensor(cider.score([vocab.decode(h.tokens) for h in greedy], images),
                                     device=pooled.device)  # (B,)
        base = greedy_reward.unsqueeze(1).expand_as(reward)  # (B, k)
        parts["scst_greedy"] = greedy_reward.mean()
    else:  # mean of the image's other samples
        base = (reward.sum(dim=1, keepdim=True) - reward) / (samples - 1)  # (B, k)
    advantage = (reward - base).reshape(-1)  # (B*k,), no gradient: rewards are numbers
    parts["scst_loss"] = -(advantage * drawn.log_probs).mean()
    parts["scst_reward"] = reward.mean()
    parts["scst_baseline"] = base.mean()
    return parts
