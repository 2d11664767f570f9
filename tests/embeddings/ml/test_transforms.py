"""Tests for embeddings/ml/transforms.py on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embeddings.ml.transforms import (
    IMAGE_SIZE,
    MAX_RESIZE_ASPECT,
    VIEWS,
    batch_tensors,
    center_crop,
    load_rgb,
    preprocess,
    resize_center_crop,
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


# --- memory bounds on long images ---------------------------------------------------------------
def _reference_crop(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """The pipeline as it was before the bound: resize the whole image, then crop its centre."""
    w, h = img.size
    if min(w, h) != size:
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    return center_crop(img, size)


def _noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("w,h", [
    (640, 480), (480, 640), (1920, 1080), (1080, 1920), (300, 200), (333, 500), (50, 80), (224, 300),
    (1000, 50), (7, 224),  # 20:1, and 32:1 whose resized long side (7168) is just at the limit
])
def test_normal_aspect_ratios_give_exactly_the_pixels_of_the_full_resize(w, h):
    for img in (_gradient_image(w, h), _noise_image(w, h)):
        expected = to_tensor(_reference_crop(img))
        assert torch.equal(preprocess(img), expected)
        assert torch.equal(view_tensor(img, "orig"), expected)
        assert np.array_equal(np.asarray(resize_center_crop(img)), np.asarray(_reference_crop(img)))


@pytest.mark.parametrize("w,h", [(5, 200), (200, 5), (3, 301), (2, 1000), (1000, 2)])
def test_past_the_limit_the_window_matches_the_full_resize(w, h):
    """Small strips past MAX_RESIZE_ASPECT, so the full reference is cheap to make here."""
    img = _gradient_image(w, h)
    reference = np.asarray(_reference_crop(img), dtype=np.int16)
    for got in (resize_center_crop(img), center_crop(resize_shorter(img))):
        assert np.abs(np.asarray(got, dtype=np.int16) - reference).max() <= 1  # 1/128 after scaling


@pytest.fixture
def resize_sizes(monkeypatch):
    """Every PIL resize as (source size, output size); one that would make a big image fails the
    test before PIL allocates it. PIL's pass in between is at most max(w) x max(h) of the two."""
    seen: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real = Image.Image.resize
    limit = (MAX_RESIZE_ASPECT + 1) * IMAGE_SIZE * IMAGE_SIZE

    def recording(self, size, *args, **kwargs):
        (sw, sh), (ow, oh) = self.size, tuple(size)
        seen.append(((sw, sh), (ow, oh)))
        assert max(sw, ow) * max(sh, oh) <= limit, f"resize {sw}x{sh} -> {ow}x{oh} is unbounded"
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording)
    return seen


@pytest.mark.parametrize("w,h", [(1, 60_000), (60_000, 1)])
def test_one_pixel_strips_are_encoded_in_bounded_memory(resize_sizes, w, h):
    img = Image.new("RGB", (w, h), (10, 200, 30))  # 180 kB; the old resize made 224 x 13,440,000
    for view in VIEWS:
        assert view_tensor(img, view).shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert preprocess(img).shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert resize_sizes and all(max(s[0], o[0]) * max(s[1], o[1]) <= 4 * IMAGE_SIZE**2 for s, o in resize_sizes)
    assert torch.allclose(preprocess(img)[:, 0, 0], torch.tensor([10.0, 200.0, 30.0]).sub(127).div(128))
    band = resize_shorter(img)
    assert max(band.size) <= MAX_RESIZE_ASPECT * IMAGE_SIZE and min(band.size) == IMAGE_SIZE
    assert np.array_equal(np.asarray(center_crop(band)), np.asarray(resize_center_crop(img)))
