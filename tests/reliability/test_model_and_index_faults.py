"""Crashes while publishing, and corrupt files, seen from the API (issue 7, cases 20 and 21).

The file-level guarantees are tested beside the code (tests/search/test_index.py,
tests/embeddings/ml/test_checkpoint.py) and the index registry's behaviour in
tests/search/test_indexes.py; these tests add the end-to-end view: a failed rebuild or a
broken checkpoint never turns a working search into a 500 or an empty page.
"""
from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings import encoding, runtime
from embeddings.ml import atomic
from embeddings.ml import checkpoint as ckpt
from embeddings.ml.heads import EmbeddingConfig, JointEmbedding
from embeddings.models import ModelVersion
from search import registry
from search.index import container as index_file
from search.services import index_rebuild
from tests.search.conftest import _fresh_registry, colour_jpeg, fake_cached_features, fake_version, ingest  # noqa: F401

pytestmark = pytest.mark.django_db


def _ids(resp) -> list[int]:
    assert resp.status_code == 200, resp.content
    return [r["image_id"] for r in resp.json()["results"]]


@pytest.fixture
def indexed(fake_version, collection):  # noqa: F811 (the fixture imported above, requested by name)
    images = [ingest(collection, colour_jpeg(rgb)) for rgb in [(250, 5, 5), (5, 250, 5), (5, 5, 250), (200, 50, 50)]]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    return images


@pytest.mark.parametrize("failure", ["enospc-on-write", "enospc-on-fsync", "killed-before-rename"])
def test_a_rebuild_that_dies_while_publishing_leaves_the_previous_index_serving(
        api, indexed, fake_version, collection, failure):  # noqa: F811 (fixture)
    before = _ids(api.get("/api/v1/search/", {"q": "red", "k": 10}))
    path = registry.index_path(fake_version.pk, "image")
    on_disk = path.read_bytes()
    more = ingest(collection, colour_jpeg((255, 0, 0), (30, 30)))
    encoding.images_encode(image_ids=[more.pk], version=fake_version)

    real_open = open

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def killed(src, dst):
        raise KeyboardInterrupt  # the worker dies between the write and the rename

    with pytest.MonkeyPatch.context() as fault:  # undone on exit; the fake model stays
        if failure == "enospc-on-write":
            fault.setattr(atomic, "open", lambda p, mode="r", *a, **k: _Full(real_open(p, mode)), raising=False)
        elif failure == "enospc-on-fsync":
            fault.setattr(index_file.os, "fsync", full_disk)
        else:
            fault.setattr(index_file.os, "replace", killed)
        with pytest.raises((OSError, KeyboardInterrupt)):
            index_rebuild(version=fake_version, modality="image")

    assert path.read_bytes() == on_disk and not list(path.parent.glob("*.part"))
    assert _ids(api.get("/api/v1/search/", {"q": "red", "k": 10})) == before  # this process: still served
    registry.reset()  # a fresh process loads the file from disk: the previous, complete index
    assert _ids(api.get("/api/v1/search/", {"q": "red", "k": 10})) == before


class _Full:
    """A file whose writes fail like a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


# --- checkpoints of the active model ----------------------------------------------------------
DIM = 8


def _save_joint(directory: Path, seed: int) -> None:
    torch.manual_seed(seed)
    config = EmbeddingConfig(dim=DIM, head="linear", hidden=8, dropout=0.0)
    tensors, cfg = ckpt.checkpoint_to_dict(JointEmbedding(config), config)
    ckpt.save_checkpoint(directory, tensors=tensors, config=cfg, meta={"kind": "embedding"})


def _texts(texts):
    rng = np.random.default_rng(len(texts))
    return rng.standard_normal((len(texts), 384)).astype(np.float32)


@pytest.fixture
def joint_version(settings, monkeypatch):
    """An active joint model with a real (tiny) checkpoint; MiniLM replaced by a fixed map."""
    monkeypatch.setattr(runtime, "encode_texts_base", _texts)
    monkeypatch.setattr(runtime, "cached_features", fake_cached_features)  # no EfficientNet load
    runtime.reset()
    _save_joint(Path(settings.MODEL_DIR) / "joint-a", seed=0)
    ModelVersion.objects.filter(kind="embedding", status="active").update(status="retired")
    version = ModelVersion.objects.create(kind="embedding", name="joint-a", family="joint", status="active",
                                          directory="joint-a", dim=DIM)
    yield version
    runtime.reset()


def test_a_crash_while_rewriting_a_checkpoint_leaves_the_previous_one_loadable(joint_version, settings):
    before = runtime.embedder_for(joint_version).encode_texts(["a dog"])
    directory = Path(settings.MODEL_DIR) / "joint-a"
    real = ckpt._atomic_write

    def dies_on_manifest(path, data):
        if path.suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    with pytest.MonkeyPatch.context() as fault:
        fault.setattr(ckpt, "_atomic_write", dies_on_manifest)
        with pytest.raises(OSError):
            _save_joint(directory, seed=1)
    runtime.reset()
    after = runtime.embedder_for(joint_version).encode_texts(["a dog"])
    np.testing.assert_array_equal(before, after)


def _damage(directory: Path, how: str) -> None:
    manifest = ckpt.manifest_path(directory)
    weights = directory / json.loads(manifest.read_text())["weights_file"]
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "bitflip":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x01
        weights.write_bytes(bytes(data))
    elif how == "zero-length":
        weights.write_bytes(b"")
    else:  # another model's checkpoint swapped in (a captioner's manifest kind)
        other = json.loads(manifest.read_text())
        other["meta"]["kind"] = "captioner"
        manifest.write_text(json.dumps(other))


@pytest.mark.parametrize("how", ["truncated", "bitflip", "zero-length", "other-model"])
def test_a_corrupt_active_checkpoint_keeps_the_loaded_model_serving_and_new_processes_answer_503(
        api, joint_version, collection, settings, caplog, how):
    images = [ingest(collection, colour_jpeg(rgb)) for rgb in [(250, 5, 5), (5, 250, 5)]]
    encoding.images_encode(image_ids=[i.pk for i in images], version=joint_version)
    index_rebuild(version=joint_version, modality="image")
    assert len(_ids(api.get("/api/v1/search/", {"q": "red"}))) == 2
    assert api.get("/api/v1/search/", {"q": "red"}).status_code == 200  # loads and serves the model
    _damage(Path(settings.MODEL_DIR) / "joint-a", how)
    assert api.get("/api/v1/search/", {"q": "red"}).status_code == 200  # the loaded model keeps serving
    runtime.reset()  # a new process (or a restart) must load it from disk: refused by its checksum
    with caplog.at_level(logging.ERROR, logger="embeddings.runtime"):
        resp = api.get("/api/v1/search/", {"q": "red"})
    assert resp.status_code == 503, resp.content
    assert resp.json()["error"]["code"] == "model_unavailable"
    assert any("cannot be loaded" in r.getMessage() for r in caplog.records)
