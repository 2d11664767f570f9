"""manage.py compute_features and embeddings/services/features.py: the product's own caches,
filled once and resumable (the encoders are small stand-ins; the caches and files are real)."""
from __future__ import annotations

import io
import json
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from embeddings import runtime
from embeddings.models import Caption
from embeddings.services.features import collection_features_compute
from tests.factories import CollectionFactory, UserFactory, make_image
from tests.training.fakes import fake_text_vectors

pytestmark = pytest.mark.django_db


@pytest.fixture
def encoders(monkeypatch):
    calls = defaultdict(int, {"images": 0, "texts": 0})

    def image_features(images, encoder="efficientnet-lite0"):
        calls["images" if encoder == "efficientnet-lite0" else f"images:{encoder}"] += len(images)
        mean = np.stack([np.asarray(img, np.float32).mean(axis=(0, 1)) for img in images])  # (B, 3)
        return {"pooled": np.tile(mean, (1, 1280 // 3 + 1))[:, :1280],
                "spatial": np.zeros((len(images), *runtime.feature_fields(encoder)["spatial"]), np.float32),
                "logits": np.zeros((len(images), 1000), np.float32)}

    def encode_texts(texts):
        calls["texts"] += len(texts)
        return fake_text_vectors(texts)

    monkeypatch.setattr(runtime, "image_encoder", lambda name="efficientnet-lite0": SimpleNamespace(
        identity=f"stand-in-{name}"))
    monkeypatch.setattr(runtime, "text_encoder", lambda: SimpleNamespace(identity="stand-in-text"))
    monkeypatch.setattr(runtime, "image_features", image_features)
    monkeypatch.setattr(runtime, "encode_texts_base", encode_texts)
    return calls


@pytest.fixture
def collection():
    coll = CollectionFactory(owner=UserFactory(), name="pets")
    for i in range(3):
        image = make_image(coll, seed=i, caption=f"a pet number {i}")
        Caption.objects.create(image=image, text="a pet number 0", source=Caption.Source.IMPORTED)  # repeated text
    return coll


def test_every_image_and_distinct_caption_is_encoded_once(encoders, collection):
    first = collection_features_compute(collection=collection)
    assert (first.images, first.images_encoded, first.captions, first.captions_encoded) == (3, 3, 3, 3)
    assert encoders == {"images": 3, "texts": 3}
    again = collection_features_compute(collection=collection)
    assert (again.images_encoded, again.captions_encoded) == (0, 0) and encoders == {"images": 3, "texts": 3}
    # What training and evaluation read afterwards comes from the same caches, keyed by the product.
    with runtime.image_feature_cache() as cache:
        ids = [runtime.image_feature_key(i) for i in collection.images.values_list("pk", flat=True)]
        assert cache.missing(ids) == []
    vectors, new = runtime.cached_text_vectors(["a pet number 1", "a pet number 0"])
    assert new == 0 and np.allclose(vectors, fake_text_vectors(["a pet number 1", "a pet number 0"]), atol=1e-3)


def test_a_new_image_is_the_only_one_encoded_on_a_rerun(encoders, collection):
    collection_features_compute(collection=collection, captions=False)
    assert encoders == {"images": 3, "texts": 0}
    make_image(collection, seed=9)
    seen = []
    summary = collection_features_compute(collection=collection, captions=False, on_progress=seen.append)
    assert summary.images_encoded == 1 and encoders["images"] == 4 and sum(seen) == 4  # 3 cached + 1 new


def test_command_prints_a_summary_and_rejects_an_unknown_collection(encoders, collection):
    out = io.StringIO()
    call_command("compute_features", "--collection", "pets", "--json", "--no-progress", stdout=out)
    assert json.loads(out.getvalue())["images_encoded"] == 3
    out = io.StringIO()
    call_command("compute_features", "--collection", "pets", "--no-progress", stdout=out)
    assert "0 of 3 images encoded (3 cached)" in out.getvalue()
    with pytest.raises(CommandError, match="Unknown collection 'nope'"):
        call_command("compute_features", "--collection", "nope", "--no-progress")


def test_each_image_encoder_fills_its_own_cache(encoders, collection):
    """`--image-encoder efficientnet-lite2` encodes every image again into Lite2's own cache; the
    Lite0 cache is neither read for it nor changed."""
    collection_features_compute(collection=collection, captions=False)
    out = io.StringIO()
    call_command("compute_features", "--collection", "pets", "--image-encoder", "efficientnet-lite2",
                 "--no-captions", "--json", "--no-progress", stdout=out)
    assert json.loads(out.getvalue())["images_encoded"] == 3
    assert encoders["images"] == 3 and encoders["images:efficientnet-lite2"] == 3
    ids = [runtime.image_feature_key(i) for i in collection.images.values_list("pk", flat=True)]
    with runtime.image_feature_cache("efficientnet-lite2") as lite2, runtime.image_feature_cache() as lite0:
        assert lite2.directory != lite0.directory and lite2.missing(ids) == [] == lite0.missing(ids)
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("compute_features", "--collection", "pets", "--image-encoder", "resnet50", "--no-progress")
