"""search/index/container.py and save/load: one checksummed file, written atomically, refused when damaged or
foreign."""
from __future__ import annotations

import errno
import os

import pytest

from embeddings.ml import atomic
from search.index import (FLAT, HNSW, IVFPQ, IndexCorrupt, IndexMismatch, VectorIndex,
                          load, read_manifest)
from search.index import container as index_file
from tests.search.index.vectors import TYPE_OF, DIM, IVF_EXACT, MODEL, build, clustered, ids_of


@pytest.mark.parametrize("kind", [FLAT, HNSW, IVFPQ, IVF_EXACT])
def test_save_load_round_trip(kind, tmp_path):
    index, xb, keys = build(1200, kind)
    index.remove(keys[:7])
    path = tmp_path / "image.idx"
    written = index.save(path)
    loaded = load(path, expected_model_version=MODEL, expected_dim=DIM, expected_modality="image")
    xq = clustered(10, seed=4)
    assert ids_of(loaded.search(xq, 12)) == ids_of(index.search(xq, 12))
    m = read_manifest(path)
    got = (m.count, m.index_type, m.dim, m.modality, m.model_version_id)
    assert got == (1193, TYPE_OF.get(kind, kind), DIM, "image", MODEL)
    assert m.recall == index.recall and m.params == index.params and m.sha256 == written.sha256
    assert loaded.tombstones == index.tombstones and not list(tmp_path.glob("*.part"))


@pytest.fixture()
def saved(tmp_path) -> tuple[os.PathLike, VectorIndex]:
    index, _, _ = build(300, FLAT)
    path = tmp_path / "text.idx"
    index.save(path)
    return path, index


def load_saved(path) -> VectorIndex:
    return load(path, expected_model_version=MODEL, expected_dim=DIM, expected_modality="image")


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip_payload", "flip_header", "garbage"])
def test_damaged_file_raises_index_corrupt(saved, damage):
    path, _ = saved
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "empty":
        data = bytearray()
    elif damage == "flip_payload":
        data[-5000] ^= 0x10
    elif damage == "flip_header":
        data[60] ^= 0x01
    else:
        data = bytearray(os.urandom(4096))
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt):
        load_saved(path)


@pytest.mark.parametrize("field,value", [("expected_model_version", "8"), ("expected_dim", 64),
                                         ("expected_modality", "text")])
def test_wrong_model_version_dim_or_modality_raises_index_mismatch(saved, field, value):
    path, _ = saved
    kwargs = {"expected_model_version": MODEL, "expected_dim": DIM, "expected_modality": "image", field: value}
    with pytest.raises(IndexMismatch):
        load(path, **kwargs)


def test_other_format_version_raises_index_mismatch(saved, monkeypatch):
    path, index = saved
    monkeypatch.setattr(index_file, "FORMAT_VERSION", 999)
    index.save(path)
    monkeypatch.undo()
    with pytest.raises(IndexMismatch):
        load_saved(path)


class _FailingFile:
    """Wraps a real file; the second write fails like a full disk."""

    def __init__(self, fh):
        self._fh, self._writes = fh, 0

    def write(self, data):
        self._writes += 1
        if self._writes == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


@pytest.mark.parametrize("failure", ["fsync", "write", "replace"])
def test_crash_before_rename_leaves_previous_file_loadable(saved, monkeypatch, failure):
    path, old = saved
    before = path.read_bytes()
    bigger, _, _ = build(500, FLAT, seed=1)
    if failure == "fsync":
        def boom(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(index_file.os, "fsync", boom)
    elif failure == "write":
        monkeypatch.setattr(atomic, "open", lambda p, mode: _FailingFile(open(p, mode)), raising=False)
    else:
        def boom(src, dst):
            raise KeyboardInterrupt  # the process dies between write and rename
        monkeypatch.setattr(index_file.os, "replace", boom)
    with pytest.raises((OSError, KeyboardInterrupt)):
        bigger.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and not list(path.parent.glob("*.part"))
    assert load_saved(path).count == old.count == 300


def test_manifest_from_dict_rejects_unknown_keys_like_every_config(saved):
    from search.index.types import Manifest

    path, _ = saved
    manifest = read_manifest(path).to_dict()
    assert Manifest.from_dict({**manifest, "sections": [], "payload_bytes": 1}).to_dict() == manifest
    with pytest.raises(ValueError, match="unknown Manifest keys"):
        Manifest.from_dict({**manifest, "dimension": 32})
