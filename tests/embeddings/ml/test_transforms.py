"""Tests for embeddings/ml/transforms.py on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embeddings.ml.transforms import (
    IMAGE_SIZE,
    VIEWS,
    batch_tensors,
    center_crop,
    load_rgb,
    preprocess,
    resize_shorter,
    to_tensor,
    view_tensor,
)


def _gradient_image(w: int, h: int) -> Image.Image:
    xs = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, axis=0)
    ys = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, axis=1)
    arr = np.stack([xs, ys, 255 - xs], axis=-1).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(arr, "RGB")


def test_to_tensor_scales_pixels_as_lite_training_did():
    arr = np.array([[[0, 127, 255]]], dtype=np.uint8)  # one pixel, R=0 G=127 B=255
    t = to_tensor(Image.fromarray(arr, "RGB"))
    assert t.shape == (3, 1, 1) and t.dtype == torch.float32
    assert t[:, 0, 0].tolist() == pytest.approx([-127 / 128, 0.0, 128 / 128])


def test_resize_shorter_keeps_aspect_and_crop_is_central():
    img = _gradient_image(300, 200)
    resized = resize_shorter(img, 224)
    assert resized.size == (336, 224)
    cropped = center_crop(resized, 224)
    assert cropped.size == (224, 224)
    assert np.array_equal(np.asarray(cropped), np.asarray(resized)[:, 56:280])


def test_small_images_are_upscaled_to_the_crop_size():
    assert preprocess(_gradient_image(50, 80)).shape == (3, IMAGE_SIZE, IMAGE_SIZE)


def test_224_square_passes_through_without_resampling():
    img = _gradient_image(224, 224)
    expected = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
    assert np.array_equal(preprocess(img).numpy(), expected.transpose(2, 0, 1))


def test_flip_view_is_the_horizontal_mirror_of_orig():
    img = _gradient_image(224, 224)
    orig, flip = view_tensor(img, "orig"), view_tensor(img, "flip")
    assert torch.equal(flip, torch.flip(orig, dims=[2]))


def test_crop_views_are_deterministic_and_distinct():
    img = _gradient_image(260, 240)
    tl, br = view_tensor(img, "crop_tl"), view_tensor(img, "crop_br")
    assert tl.shape == br.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(tl, view_tensor(img, "crop_tl"))
    assert not torch.allclose(tl, br)
    # top-left crop starts at the image corner: its first pixel matches orig's first pixel
    orig = view_tensor(img, "orig")
    assert torch.allclose(tl[:, 0, 0], orig[:, 0, 0], atol=0.05)


def test_batch_stacks_one_view_per_image_and_rejects_unknown_views():
    imgs = [_gradient_image(224, 224), _gradient_image(300, 250)]
    for view in VIEWS:
        assert batch_tensors(imgs, view).shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="unknown view"):
        batch_tensors(imgs, "rotate")
    with pytest.raises(ValueError):
        batch_tensors([], "orig")


def test_load_rgb_converts_grayscale_and_alpha(tmp_path):
    Image.new("L", (30, 20), 100).save(tmp_path / "g.png")
    Image.new("RGBA", (30, 20), (10, 20, 30, 128)).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "g.png").mode == "RGB"
    rgba = load_rgb(tmp_path / "a.png")
    assert rgba.mode == "RGB" and rgba.size == (30, 20)
