"""The caption-generator TrainTask: cached image features -> caption decoder (teacher forcing).

Data is ``CaptionData``: per image V cached feature views (view 0 = the plain image, the
others e.g. its horizontal flip), pooled (N, V, F) and, for the attention decoder, spatial
(N, V, 49, F), plus each image's reference captions.

Every epoch visits each (image, caption) pair once (unless ``drop_last``). A batch holds ALL
captions of its images (about ``batch_size`` captions, as (I, K, L+1) token ids), so each
image's features are projected once per batch, not once per caption; ``loss`` sorts the
caption rows by length so the decoder runs only the still-active prefix of the batch at each
step (no compute spent on padding), and the output layer runs once over the real positions
(packed). Every batch tensor has the images as its first dimension,
so the DDP hooks can shard it by rows (choose ``batch_size`` so the images per batch divide by
the world size, and set ``drop_last``). Each image uses one random cached
view per epoch (``augment_views``). The loss is label-smoothed cross-entropy plus,
for the attention decoder, the doubly stochastic attention penalty; optional scheduled
sampling ramps linearly to ``scheduled_sampling_max`` over the run.

Dev evaluation decodes view 0 of every dev image (greedy, or a small beam) and scores the
captions against all references with BLEU/ROUGE-L/CIDEr-D (``tokenizer="simple"``, no Java,
no METEOR, so it is quick enough to run every epoch). ``keep_snapshots`` keeps each evaluated
epoch's weights for checkpoint averaging.

With ``scst_epochs`` > 0 the run continues, after the cross-entropy epochs ("xe", the loop's own
``epochs``), with a self-critical phase ("scst", training.ml.scst; training.ml.phases): from the
best cross-entropy weights, ``scst_samples`` sampled captions per image rewarded by CIDEr-D against
the image's training references (document frequencies of the training references, computed once
when the phase starts), baseline the greedy decode or the mean of the other samples, constant lr
``scst_lr``. Its batches are the same images as the cross-entropy batches (so the same number of
steps per epoch), and its steps log ``scst_reward`` / ``scst_baseline`` beside ``scst_loss``.
Pure: no Django.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from embeddings.ml.caption_decoding import Ensemble, beam_search, greedy_decode
from embeddings.ml.captioner import CaptionDecoder, CaptionerConfig, build_decoder, caption_loss
from embeddings.ml.image_encoder import ImageEncoderName
from embeddings.ml.vocab import EOS_ID, PAD_ID, Vocabulary, tokenize
from training.ml.caption_metrics import caption_scores
from training.ml.cider_reward import CiderD
from training.ml.config import TrainConfig, check_image_encoder, register_kind
from training.ml.phases import Phase
from training.ml.scst import scst_loss


@dataclass(frozen=True)
class CaptionTaskConfig:
    """How the caption task samples, regularises and evaluates."""

    vocab_min_count: int = 5  # training-caption words seen fewer times become <unk>
    augment_views: bool = True  # each (image, caption) pair uses a random cached view
    label_smoothing: float = 0.1
    attention_weight: float = 1.0  # doubly stochastic attention penalty (attention decoder)
    scheduled_sampling_max: float = 0.0  # final probability of feeding back own samples; 0 = off
    eval_beam_size: int = 1  # 1 = greedy dev decoding (fast); >1 = beam search
    eval_length_penalty: float = 0.0
    eval_batch_size: int = 250  # dev images decoded at once
    keep_snapshots: bool = False  # keep every evaluated epoch's weights (checkpoint averaging)
    drop_last: bool = False  # skip the last, smaller batch (DDP needs equal batches)
    image_encoder: ImageEncoderName = "efficientnet-lite0"  # whose features it trains on (as for embeddings)
    # Self-critical sequence training after the cross-entropy epochs (0 = none; Rennie et al. 2017).
    scst_epochs: int = 0  # upper bound; early stopping on the loop's metric applies per phase
    scst_lr: float = 5e-5  # constant lr of the phase (self-critical.pytorch: 5e-5 after XE)
    scst_samples: int = 5  # captions sampled per image and step
    scst_max_len: int = 16  # longest sampled caption in tokens, <eos> included (<= model.max_len)
    scst_baseline: Literal["greedy", "mean"] = "greedy"  # greedy decode's reward, or the other samples' mean
    # Fine-tuning: start from this captioner model version's weights and vocabulary (its id; 0 =
    # from scratch). The run's model section must describe the same architecture.
    init_version: int = 0

    def __post_init__(self) -> None:
        check_image_encoder(self.image_encoder)
        if self.vocab_min_count < 1 or self.eval_beam_size < 1 or self.eval_batch_size < 1:
            raise ValueError("vocab_min_count, eval_beam_size and eval_batch_size must be >= 1")
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.scheduled_sampling_max <= 1.0:
            raise ValueError("label_smoothing must be in [0, 1) and scheduled_sampling_max in [0, 1]")
        if self.attention_weight < 0:
            raise ValueError("attention_weight must be >= 0")
        if self.scst_epochs < 0 or self.scst_lr <= 0 or self.scst_samples < 1 or self.scst_max_len < 2:
            raise ValueError("scst_epochs must be >= 0, scst_lr > 0, scst_samples >= 1, scst_max_len >= 2")
        if self.init_version < 0:
            raise ValueError("init_version must be a model version id, or 0 for none")
        if self.scst_baseline not in ("greedy", "mean"):
            raise ValueError("scst_baseline must be 'greedy' or 'mean'")
        if self.scst_baseline == "mean" and self.scst_samples < 2:
            raise ValueError("scst_baseline 'mean' needs scst_samples >= 2")


register_kind("captioner", CaptionerConfig, CaptionTaskConfig)


def default_caption_train_config() -> TrainConfig:
    """The settings bench/train_captioner_flickr8k.py uses (tuned on Flickr8k dev, CPU budget)."""
    loop = dataclasses.replace(TrainConfig.default("captioner").loop, epochs=6, batch_size=64, lr=2e-3,
                               early_stop_metric="cider_d", early_stop_mode="max")
    return TrainConfig(kind="captioner", loop=loop, model=CaptionerConfig(), task=CaptionTaskConfig())


@dataclass(frozen=True)
class CaptionData:
    """Cached features and reference captions of one split (features kept on CPU)."""

    pooled: Tensor  # (N, V, F) float16/32; view 0 = unaugmented
    spatial: Tensor | None  # (N, V, C, F) or None (show-and-tell needs no cells)
    captions: Sequence[Sequence[str]]  # N lists of raw reference captions
    keys: Sequence[str]  # N image keys (file names)

    def __post_init__(self) -> None:
        n = self.pooled.shape[0]
        if self.pooled.dim() != 3:
            raise ValueError(f"pooled must be (N, V, F), got {tuple(self.pooled.shape)}")
        if self.spatial is not None and (self.spatial.dim() != 4 or self.spatial.shape[:2] != self.pooled.shape[:2]):
            raise ValueError(f"spatial must be (N, V, C, F) matching pooled, got {tuple(self.spatial.shape)}")
        if len(self.captions) != n or len(self.keys) != n:
            raise ValueError(f"need {n} caption lists and keys, got {len(self.captions)} and {len(self.keys)}")
        if any(len(c) == 0 for c in self.captions):
            raise ValueError("every image needs at least one caption")

    @property
    def num_images(self) -> int:
        return self.pooled.shape[0]

    @property
    def num_views(self) -> int:
        return self.pooled.shape[1]


class CaptionTask:
    """TrainTask for the caption decoders; builds vocabulary (if not given) and model with ``seed``."""

    main_phase = "xe"  # the loop's own epochs: cross-entropy (teacher forcing)

    def __init__(self, model_config: CaptionerConfig, task_config: CaptionTaskConfig, *, batch_size: int,
                 train: CaptionData, dev: CaptionData, vocab: Vocabulary | None = None, seed: int = 0,
                 epochs: int = 1) -> None:
        """``epochs`` (the loop's) only sets the scheduled-sampling ramp."""
        if model_config.decoder == "attention" and (train.spatial is None or dev.spatial is None):
            raise ValueError("the attention decoder needs spatial features in both splits")
        if task_config.scst_epochs and task_config.scst_max_len > model_config.max_len:
            raise ValueError(f"scst_max_len {task_config.scst_max_len} exceeds model.max_len {model_config.max_len}")
        self.cfg = task_config
        self.batch_size = batch_size
        self.train_data, self.dev_data = train, dev
        self.vocab = vocab or Vocabulary.build(
            (c for caps in train.captions for c in caps), min_count=task_config.vocab_min_count)
        self.model_config = dataclasses.replace(model_config, vocab_size=len(self.vocab))
        torch.manual_seed(seed)  # model init is part of the run's seed
        self.model = build_decoder(self.model_config)
        self._tokens, self._lengths = self._encode_captions(train)  # (N, K, L+1), (N, K)
        # ``batch_size`` counts captions; a batch holds all captions of its images.
        n_captions = int((self._lengths > 0).sum())
        self._images_per_batch = max(1, round(batch_size * train.num_images / n_captions))
        self.epochs_planned = epochs  # scheduled sampling ramps over this many epochs
        self._epoch = 0
        self.snapshots: list[tuple[int, dict[str, Tensor]]] = []  # (evaluation index, weights)
        self.last_hypotheses: dict[str, str] = {}
        self.phase = self.main_phase
        self.cider: CiderD | None = None  # the reward, built when the scst phase starts
        self._generator: torch.Generator | None = None  # this epoch's sampling generator

    def extra_phases(self) -> list[Phase]:
        return [Phase(name="scst", epochs=self.cfg.scst_epochs, lr=self.cfg.scst_lr)]

    def begin_phase(self, name: str) -> None:
        """Called by the loop as a phase starts (and on resume): the reward is built once, here."""
        self.phase = name
        if name == "scst" and self.cider is None:
            self.cider = CiderD([[" ".join(tokenize(c)) for c in caps] for caps in self.train_data.captions])

    def _encode_captions(self, data: CaptionData) -> tuple[Tensor, Tensor]:
        """Token ids per image (N, K, L+1): <bos> .. <eos>, padded; and input lengths (N, K).

        K is the most captions any image has; missing captions have length 0. The length of a
        caption is its number of input positions (<bos> + words), i.e. its tokens minus one.
        """
        limit = self.model_config.max_len + 1  # <bos> + up to max_len tokens incl. <eos>
        rows = []
        for caps in data.captions:
            ids_list = []
            for caption in caps:
                ids = self.vocab.encode(caption)
                if len(ids) > limit:  # truncate long captions but keep their <eos>
                    ids = ids[: limit - 1] + [EOS_ID]
                ids_list.append(ids)
            rows.append(ids_list)
        k = max(len(r) for r in rows)
        width = max(len(ids) for r in rows for ids in r)
        tokens = torch.full((len(rows), k, width), PAD_ID, dtype=torch.long)
        lengths = torch.zeros(len(rows), k, dtype=torch.long)
        for i, ids_list in enumerate(rows):
            for j, ids in enumerate(ids_list):
                tokens[i, j, : len(ids)] = torch.tensor(ids)
                lengths[i, j] = len(ids) - 1
        return tokens, lengths

    def num_batches(self) -> int:
        n, per = self.train_data.num_images, self._images_per_batch
        return n // per if self.cfg.drop_last else math.ceil(n / per)

    def sampling_prob(self, epoch: int) -> float:
        """Scheduled-sampling probability for 0-based ``epoch``: linear ramp from 0."""
        if self.cfg.scheduled_sampling_max <= 0 or self.epochs_planned <= 1:
            return 0.0
        return self.cfg.scheduled_sampling_max * epoch / (self.epochs_planned - 1)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        self._epoch, self._generator = epoch, generator
        n = self.train_data.num_images
        order = torch.randperm(n, generator=generator)
        n_views = self.train_data.num_views if self.cfg.augment_views else 1
        views = torch.randint(n_views, (n,), generator=generator)  # one view per image per epoch
        for b in range(self.num_batches()):
            chunk = order[b * self._images_per_batch:(b + 1) * self._images_per_batch]  # (I,)
            lengths = self._lengths[chunk]  # (I, K)
            # Every tensor is per image (first dim I), so DDP can shard the batch by rows.
            batch = {"pooled": self.train_data.pooled[chunk, views[chunk]].float(),  # (I, F)
                     "tokens": self._tokens[chunk, :, : int(lengths.max()) + 1],  # (I, K, L+1)
                     "lengths": lengths, "image": chunk}  # (I,) rows of train_data (the reward's refs)
            # __init__ checked that the attention decoder has spatial features.
            if self.model_config.decoder == "attention" and self.train_data.spatial is not None:
                batch["spatial"] = self.train_data.spatial[chunk, views[chunk]].float()  # (I, C, F)
            yield batch

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.phase == "scst":
            if self.cider is None:
                raise RuntimeError("the scst phase started without begin_phase('scst')")
            core = cast(CaptionDecoder, getattr(model, "module", model))
            return scst_loss(core, batch["pooled"], batch.get("spatial"), batch["image"].tolist(), vocab=self.vocab,
                             cider=self.cider, samples=self.cfg.scst_samples, max_len=self.cfg.scst_max_len,
                             baseline=self.cfg.scst_baseline, generator=self._generator)
        tokens, image_index, lengths = _caption_rows(batch["tokens"], batch["lengths"])
        prob = self.sampling_prob(self._epoch)
        # packed: the output layer runs once over the real positions (scheduled sampling needs
        # each step's logits to draw the next input, so it keeps the per-step path)
        out = model(batch["pooled"], batch.get("spatial"), tokens[:, :-1], image_index=image_index,
                    lengths=lengths, sampling_prob=prob, packed=prob == 0.0)
        return caption_loss(out, tokens[:, 1:], label_smoothing=self.cfg.label_smoothing,
                            attention_weight=self.cfg.attention_weight)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        core = cast(CaptionDecoder, getattr(model, "module", model))  # unwrap DDP; the task built a decoder
        hyps = decode_split(core, self.dev_data, self.vocab, beam_size=self.cfg.eval_beam_size,
                            length_penalty=self.cfg.eval_length_penalty, batch_size=self.cfg.eval_batch_size)
        self.last_hypotheses = hyps
        refs = dict(zip(self.dev_data.keys, self.dev_data.captions))
        scores = caption_scores(hyps, refs, tokenizer="simple", meteor=False)
        if self.cfg.keep_snapshots:
            weights = {k: v.detach().to("cpu").clone() for k, v in core.state_dict().items()}
            self.snapshots.append((len(self.snapshots) + 1, weights))
        words = [len(h.split()) for h in hyps.values()]
        scores["mean_length"] = float(np.mean(words)) if words else 0.0
        scores["vocab_used"] = float(len({w for h in hyps.values() for w in h.split()}))
        return scores


def _caption_rows(tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image captions (I, K, L+1), (I, K) -> rows sorted by decreasing length.

    Returns tokens (B, L+1), the image of each row (B,) and input lengths (B,), dropping
    missing captions (length 0); ties keep image-major order (stable sort).
    """
    n_images, k, width = tokens.shape
    flat_len = lengths.reshape(-1)  # (I*K,)
    image_index = torch.arange(n_images, device=tokens.device).repeat_interleave(k)  # (I*K,)
    order = torch.argsort(flat_len, descending=True, stable=True)
    order = order[flat_len[order] > 0]  # (B,)
    return tokens.reshape(n_images * k, width)[order], image_index[order], flat_len[order]


@torch.no_grad()
def decode_split(decoder: CaptionDecoder | Ensemble, data: CaptionData, vocab: Vocabulary, *, beam_size: int = 1,
                 length_penalty: float = 0.0, no_repeat_ngram_size: int = 0, batch_size: int = 250,
                 view: int | None = 0) -> dict[str, str]:
    """Caption every image of ``data``: {image key: text}.

    ``view`` picks one cached view; None passes all views, pooled (b, V, F), for a multi-view
    ``Ensemble``.
    """
    pick = slice(None) if view is None else view
    was_training = decoder.training
    decoder.eval()
    device = next(decoder.parameters()).device
    out: dict[str, str] = {}
    for start in range(0, data.num_images, batch_size):
        pooled = data.pooled[start:start + batch_size, pick].float().to(device)  # (b, F) or (b, V, F)
        spatial = None if data.spatial is None else data.spatial[start:start + batch_size, pick].float().to(device)
        if beam_size == 1:
            hyps = greedy_decode(decoder, pooled, spatial)
        else:
            hyps = [h[0] for h in beam_search(decoder, pooled, spatial, beam_size=beam_size,
                                              length_penalty=length_penalty,
                                              no_repeat_ngram_size=no_repeat_ngram_size, batch_size=batch_size)]
        for key, hyp in zip(data.keys[start:start + batch_size], hyps):
            out[key] = vocab.decode(hyp.tokens)
    decoder.train(was_training)
    return out


def average_weights(snapshots: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of several state dicts of the same model (checkpoint averaging)."""
    if not snapshots:
        raise ValueError("nothing to average")
    keys = snapshots[0].keys()
    return {k: torch.stack([s[k].float() for s in snapshots]).mean(dim=0).to(snapshots[0][k].dtype) for k in keys}
