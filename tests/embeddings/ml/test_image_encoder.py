"""Tests for embeddings/ml/image_encoder.py with the real EfficientNet-Lite0 weights (CPU)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from embeddings.ml.image_encoder import ImageEncoder, _load_backbone, default_weights_path
from embeddings.ml.transforms import batch_tensors, load_rgb
from tests.embeddings.ml.flickr8k_data import require_flickr8k

DOG_CLASSES = range(151, 269)  # ImageNet-1k dog breeds


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    torch.manual_seed(0)
    return ImageEncoder(device="cpu")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(2)]
    return batch_tensors(imgs)  # (2, 3, 224, 224)


def test_forward_returns_pooled_spatial_and_logits_shapes(encoder, images):
    out = encoder.encode(images)
    assert out["pooled"].shape == (2, 1280)
    assert out["spatial"].shape == (2, 49, 1280)
    assert out["logits"].shape == (2, 1000)
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in out.values())


def test_features_are_consistent_with_the_library_forward(encoder, images):
    out = encoder.encode(images)
    # pooled is the mean of the 49 cells; logits are the library's own classifier output
    assert torch.allclose(out["pooled"], out["spatial"].mean(dim=1), atol=1e-5)
    with torch.no_grad():
        reference = encoder.backbone(images)
    assert torch.allclose(out["logits"], reference, atol=1e-4)


def test_folded_paddings_give_bit_identical_features_to_the_library_model(images):
    """Symmetric "same" paddings are folded into their convs; the one-sided (stride-2) ones stay."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    nchw = ImageEncoder(channels_last=False)
    library = _load_backbone(default_weights_path()).eval()
    kept = [m for m in nchw.backbone.modules() if isinstance(m, Conv2dStaticSamePadding)
            and isinstance(m.static_padding, torch.nn.ZeroPad2d)]
    folded = [m for m in nchw.backbone.modules() if isinstance(m, Conv2dStaticSamePadding) and m.padding != (0, 0)]
    assert len(folded) == 12 and len(kept) == 5
    assert all(m.static_padding.padding[0::2] != m.static_padding.padding[1::2] for m in kept)  # one-sided
    with torch.no_grad():
        assert torch.equal(nchw.backbone.extract_features(images), library.extract_features(images))
        assert torch.equal(nchw.backbone(images), library(images))


def test_the_cpu_encoder_runs_channels_last_and_agrees_with_the_nchw_forward(encoder, images):
    assert encoder.channels_last and encoder.backbone._conv_stem.weight.is_contiguous(
        memory_format=torch.channels_last)
    nhwc, nchw = encoder.encode(images), ImageEncoder(channels_last=False).encode(images)
    for name in ("pooled", "spatial", "logits"):
        assert nhwc[name].is_contiguous() and nhwc[name].shape == nchw[name].shape
        assert torch.allclose(nhwc[name], nchw[name], atol=1e-4), name


def test_encode_is_deterministic_and_batch_independent(encoder, images):
    a = encoder.encode(images)
    b = encoder.encode(images[1:])
    assert torch.equal(a["pooled"], encoder.encode(images)["pooled"])
    assert torch.allclose(a["pooled"][1:], b["pooled"], atol=1e-4)


def test_identity_names_the_sha256_of_the_weights(encoder):
    digest = hashlib.sha256(default_weights_path().read_bytes()).hexdigest()
    assert digest in encoder.identity
    assert encoder.identity.startswith("efficientnet-lite0|")


def test_frozen_by_default_and_last_blocks_trainable_on_request(encoder, images):
    assert not any(p.requires_grad for p in encoder.parameters())
    try:
        encoder.set_trainable_blocks(2)
        names = [n for n, p in encoder.named_parameters() if p.requires_grad]
        owners = {".".join(n.split(".")[1:3]) if "._blocks." in n else n.split(".")[1] for n in names}
        last = encoder.num_blocks - 1
        assert owners == {f"_blocks.{last - 1}", f"_blocks.{last}", "_conv_head", "_bn1"}
        encoder.train()
        assert not any(m.training for m in encoder.modules())  # BN stays on running stats
        out = encoder(images)
        out["pooled"].sum().backward()
        assert encoder.backbone._conv_head.weight.grad is not None
        assert encoder.backbone._conv_stem.weight.grad is None
    finally:
        encoder.set_trainable_blocks(0)
        encoder.zero_grad(set_to_none=True)
    with pytest.raises(ValueError):
        encoder.set_trainable_blocks(encoder.num_blocks + 1)


def test_rejects_images_without_three_channels(encoder):
    with pytest.raises(ValueError):
        encoder.encode(torch.zeros(1, 1, 224, 224))


def test_dog_photos_get_dog_classes(encoder):
    # ImageNet-correctness check: captions of these Flickr8k photos all mention a dog.
    data = require_flickr8k()
    files = ["101654506_8eb26cfb60.jpg", "1009434119_febe49276a.jpg"]
    logits = encoder.encode(batch_tensors([load_rgb(data / "images" / f) for f in files]))["logits"]
    assert all(int(i) in DOG_CLASSES for i in logits.argmax(dim=1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_encode_is_close_to_cpu(encoder, images):
    cpu = encoder.encode(images)["pooled"]
    gpu_encoder = ImageEncoder(device="cuda")
    gpu = gpu_encoder.encode(images)["pooled"]
    cos = torch.nn.functional.cosine_similarity(cpu, gpu, dim=1)
    assert (cos > 0.99).all()


def test_lite2_loads_offline_at_its_native_resolution_with_its_own_identity() -> None:
    """Issue 20: Lite2 from its registry package; its identity keys a separate feature cache."""
    import torch

    from embeddings.ml.image_encoder import LITE2, ImageEncoder

    enc = ImageEncoder(model_name=LITE2)
    assert enc.image_size == 260 and enc.identity.startswith("efficientnet-lite2|") and "|260px|" in enc.identity
    out = enc.encode(torch.zeros(1, 3, 260, 260))
    assert out["pooled"].shape == (1, 1280) and out["logits"].shape == (1, 1000)
    assert out["spatial"].shape == (1, 81, 1280)  # 9 x 9 cells at 260 px
    x = torch.randn(1, 3, 260, 260, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # folded paddings and channels-last (module doc) change nothing but rounding
        library = _load_backbone(default_weights_path(LITE2), LITE2).eval()(x)
        assert torch.allclose(enc.backbone(x.contiguous(memory_format=torch.channels_last)), library, atol=1e-4)
