"""A model version is fed the features of the image encoder it was trained on (Lite0 or Lite2):
runtime.image_encoder_name reads it from the identity the version recorded, and encoding,
captioning and search by image use that encoder's own features and cache. The encoders are the
real EfficientNet-Lite0 / Lite2 (a few images); the embedders are small stand-ins."""
from __future__ import annotations

import numpy as np
import pytest

from embeddings import encoding, runtime
from embeddings.ml.image_encoder import LITE2, MODEL_NAME
from embeddings.models import ImageEmbedding, ModelVersion
from search.services.queries import stored_image_vector
from tests.factories import CollectionFactory, UserFactory, make_image

pytestmark = pytest.mark.django_db

LITE2_ID = "efficientnet-lite2|lite-127-128-bicubic-v1|260px|sha256=abc"


def version_with(identity: str | None) -> ModelVersion:
    encoders = {"image": identity, "text": "t"} if identity is not None else {}
    return ModelVersion.objects.create(kind="embedding", name=f"v-{identity}", family="joint", dim=4,
                                       encoders=encoders)


def test_the_recorded_identity_names_the_encoder_and_an_unknown_one_is_a_503():
    assert runtime.image_encoder_name(version_with(None)) == MODEL_NAME  # versions from before the choice
    assert runtime.image_encoder_name(version_with(f"{MODEL_NAME}|x|sha256=1")) == MODEL_NAME
    assert runtime.image_encoder_name(version_with(LITE2_ID)) == LITE2
    assert runtime.image_encoder_name(version_with("efficientnet-lite0 (ImageNet)")) == MODEL_NAME  # ConSE v0's label
    conse = ModelVersion.objects.get(kind="embedding", family="conse")  # as embeddings/0002 made it
    assert runtime.image_encoder_name(conse) == MODEL_NAME
    with pytest.raises(runtime.ModelUnavailable, match="image encoder this install does not have") as err:
        runtime.image_encoder_name(version_with("resnet50|x"))
    assert err.value.status_code == 503
    with pytest.raises(ValueError, match="unknown image encoder"):
        runtime.image_encoder("resnet50")


@pytest.fixture
def images():
    collection = CollectionFactory(owner=UserFactory(), name="pics")
    return [make_image(collection, seed=i, caption=f"picture {i}") for i in range(2)]


class PooledEmbedder:
    """Records the features it is given; vectors are 4 pooled channels."""

    def __init__(self) -> None:
        self.seen: list[dict[str, np.ndarray]] = []

    def encode_features(self, feats):
        self.seen.append(feats)
        v = np.asarray(feats["pooled"], np.float32)[:, :4] + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_texts(self, texts):
        return np.ones((len(texts), 4), np.float32) / 2.0


def test_a_lite2_version_is_encoded_from_lite2_features_in_lite2s_own_cache(images, monkeypatch):
    embedder = PooledEmbedder()
    monkeypatch.setattr(runtime, "embedder_for", lambda version: embedder)
    lite2 = version_with(LITE2_ID)
    lite0 = version_with(None)
    ids = [i.pk for i in images]
    assert encoding.images_encode(image_ids=ids, version=lite2) == 2
    assert embedder.seen[-1]["spatial"].shape == (2, 81, 1280)  # 260 px: a 9x9 map
    keys = [runtime.image_feature_key(i) for i in ids]
    with runtime.image_feature_cache(LITE2) as cache2, runtime.image_feature_cache() as cache0:
        assert cache2.missing(keys) == [] and cache0.missing(keys) == keys  # Lite0's cache untouched
    encoding.images_encode(image_ids=ids, version=lite0)
    assert embedder.seen[-1]["spatial"].shape == (2, 49, 1280)
    # The two encoders see the same pictures differently: the stored vectors differ per version.
    v2 = ImageEmbedding.objects.get(image_id=ids[0], model_version=lite2).vector
    v0 = ImageEmbedding.objects.get(image_id=ids[0], model_version=lite0).vector
    assert bytes(v2) != bytes(v0)
    # Search by a stored image without a stored row encodes it with the version's encoder too.
    ImageEmbedding.objects.filter(model_version=lite2).delete()
    vec = stored_image_vector(version=lite2, image_id=ids[0])
    assert embedder.seen[-1]["spatial"].shape == (1, 81, 1280)
    assert np.allclose(vec, np.frombuffer(bytes(v2), "<f4"), atol=1e-5)


def test_runtime_features_of_both_encoders_come_at_their_own_resolution(images):
    pics = [encoding.load_stored_image(i.pk) for i in images]
    lite0 = runtime.image_features(pics)
    lite2 = runtime.image_features(pics, LITE2)
    assert lite0["spatial"].shape == (2, 49, 1280) and lite2["spatial"].shape == (2, 81, 1280)
    assert lite0["logits"].shape == lite2["logits"].shape == (2, 1000)
    empty = runtime.image_features([], LITE2)
    assert empty["spatial"].shape == (0, 81, 1280)
    assert runtime.image_encoder(LITE2).identity.startswith(f"{LITE2}|")
