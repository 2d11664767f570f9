"""The batched encode path (embeddings/encoding.py, runtime.cached_features, services/processing.py):
forwards of LOUPE_ENCODE_BATCH images, one cache shard and one vector write per chunk, an unreadable
image failing alone, reruns that add nothing, and training's features through the same loader.

The image encoder is a stand-in that records each forward's batch (Lite0 itself is exercised in
tests/embeddings/ml); the database, the stored files, the feature cache and the services are real.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from embeddings import encoding, runtime
from embeddings.models import Image, ImageEmbedding, ModelVersion
from embeddings.services import processing
from embeddings.services.features import collection_features_compute
from search.models import PendingIndexItem
from tests.factories import CollectionFactory, UserFactory, make_image
from tests.search.conftest import DIM, FakeEmbedder, fake_image_features

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def forwards(monkeypatch, settings):
    """Batch sizes of the stand-in encoder's forwards; each forward also checks that the
    feature cache's lock is free (encoding never holds it)."""
    batches: list[int] = []

    def image_features(images, encoder="efficientnet-lite0"):
        lock = Path(settings.FEATURE_DIR) / "stand-in.lock"
        if lock.exists():
            with open(lock, "a+") as fh:  # raises BlockingIOError if the cache were locked now
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
        batches.append(len(images))
        return fake_image_features(images)

    monkeypatch.setattr(runtime, "image_encoder", lambda *_: SimpleNamespace(identity="stand-in"))
    monkeypatch.setattr(runtime, "image_features", image_features)
    monkeypatch.setattr(runtime, "_locked_cache", _named_cache(runtime._locked_cache))
    return batches


def _named_cache(real):
    def locked(directory, identity, fields):  # one folder name, so the test knows the lock file
        return real(directory.parent / "stand-in", identity, fields)
    return locked


@pytest.fixture
def version(monkeypatch, published):
    ModelVersion.objects.filter(kind=ModelVersion.Kind.EMBEDDING).update(status=ModelVersion.Status.RETIRED)
    row = ModelVersion.objects.create(kind=ModelVersion.Kind.EMBEDDING, name="fake", family="fake",
                                      status=ModelVersion.Status.ACTIVE, dim=DIM)
    embedder = FakeEmbedder()
    monkeypatch.setattr(runtime, "embedder_for", lambda v: embedder)
    return row


@pytest.fixture
def images():
    collection = CollectionFactory(owner=UserFactory(), name="batch")
    return [make_image(collection, seed=i) for i in range(5)]


def _break_file(image: Image) -> None:
    Path(image.file.path).write_bytes(b"not an image at all")


def _cache_keys() -> list[str]:
    with runtime.image_feature_cache() as cache:
        return cache.keys()


def test_encode_batch_setting_sizes_the_forwards(settings, forwards, version, images):
    settings.LOUPE_ENCODE_BATCH = 2
    assert runtime.encode_batch_size() == 2
    stored = encoding.images_encode(image_ids=[i.pk for i in images])
    assert stored == 5 and forwards == [2, 2, 1]
    with runtime.image_feature_cache() as cache:
        assert len(cache._shards) == 1  # one shard for the whole chunk, not one per forward


def test_encode_batch_default_is_four_on_cpu_and_a_bad_value_is_refused(settings):
    settings.ML_DEVICE, settings.LOUPE_ENCODE_BATCH = "cpu", 0
    assert runtime.encode_batch_size() == 4
    env = {**os.environ, "LOUPE_ENCODE_BATCH": "-1", "DJANGO_SETTINGS_MODULE": "project.settings"}
    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "LOUPE_ENCODE_BATCH=-1" in proc.stderr


def test_chunk_with_an_unreadable_image_fails_only_that_image(settings, forwards, version, images,
                                                               django_capture_on_commit_callbacks):
    settings.LOUPE_ENCODE_BATCH = 2
    bad = images[2]
    _break_file(bad)
    with django_capture_on_commit_callbacks(execute=True):
        result = processing.images_process(image_ids=[i.pk for i in images])
    assert result == {"processed": 4, "failed": 1}
    bad.refresh_from_db()
    assert bad.status == Image.Status.FAILED
    assert bad.status_reason.startswith("unreadable image file: ") and "cannot identify image file" in bad.status_reason
    good = [i.pk for i in images if i.pk != bad.pk]
    assert set(Image.objects.filter(pk__in=good).values_list("status", flat=True)) == {Image.Status.READY}
    assert sorted(ImageEmbedding.objects.filter(model_version=version).values_list("image_id", flat=True)) == good
    assert sum(forwards) == 4  # each readable image went through the encoder once (the rerun read the cache)
    assert sorted(_cache_keys(), key=int) == [str(pk) for pk in good]
    assert set(PendingIndexItem.objects.values_list("item_id", flat=True)) == set(good)


def test_a_retried_chunk_duplicates_nothing(settings, forwards, version, images, django_capture_on_commit_callbacks):
    ids = [i.pk for i in images]
    with django_capture_on_commit_callbacks(execute=True):
        processing.images_process(image_ids=ids)
    Image.objects.filter(pk__in=ids).update(status=Image.Status.PENDING)  # a redelivered task
    encoded = sum(forwards)
    with django_capture_on_commit_callbacks(execute=True):
        assert processing.images_process(image_ids=ids) == {"processed": 5, "failed": 0}
    assert sum(forwards) == encoded  # features come from the cache
    assert ImageEmbedding.objects.filter(model_version=version).count() == 5
    assert sorted(_cache_keys(), key=int) == [str(pk) for pk in ids]
    assert PendingIndexItem.objects.count() == 5


def test_unreadable_error_names_each_image_and_keeps_the_others(forwards, images):
    _break_file(images[0])
    os.remove(images[3].file.path)
    keys = [str(i.pk) for i in images]
    with pytest.raises(runtime.ImagesUnreadable) as caught:
        runtime.cached_features(keys, encoding.stored_image_loader(keys))
    exc = caught.value
    assert set(exc.failed) == {keys[0], keys[3]}
    assert "FileNotFoundError" in exc.failed[keys[3]] and "2 stored image(s) cannot be read" in exc.message
    assert exc.keys == [keys[1], keys[2], keys[4]] and exc.features["pooled"].shape == (3, 1280)
    again = runtime.cached_features(exc.keys, encoding.stored_image_loader(exc.keys))  # cached now
    assert (again["pooled"] == exc.features["pooled"]).all()


def test_training_features_use_the_same_loader_and_batches(settings, forwards, monkeypatch, images):
    from training.encoders import RuntimeEncoders

    settings.LOUPE_ENCODE_BATCH = 3
    loaded: list[int] = []
    real = encoding.stored_image_loader

    def spy(ids):
        loaded.extend(int(i) for i in ids)
        return real(ids)

    monkeypatch.setattr(encoding, "stored_image_loader", spy)
    _break_file(images[4])
    summary = collection_features_compute(collection=images[0].collection, captions=False)
    assert (summary.images_encoded, summary.images_unreadable) == (4, 1)
    assert forwards == [3, 1] and sorted(loaded) == sorted(i.pk for i in images)
    feats = RuntimeEncoders().image_features([i.pk for i in images[:4]], ["pooled"])
    assert feats["pooled"].shape == (4, 1280) and forwards == [3, 1]  # read from the cache, same loader
    assert len(loaded) == 9
