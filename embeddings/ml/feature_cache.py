"""Durable on-disk cache of encoder features, keyed by strings.

One cache directory holds the features of ONE encoder identity for ONE view (e.g. the
horizontally flipped images) and any number of named fields sharing the same keys, e.g.
``{"pooled": (1280,), "spatial": (49, 1280), "logits": (1000,)}``. A field whose first
dimension is ``None`` is ragged (per-key variable length, e.g. token states (T_i, 384)).

Layout (``FORMAT_VERSION`` 1)::

    <dir>/index.json                 format_version, encoder_identity, dtype, fields, meta,
                                     shards: [{id, keys, files: {field: {name, sha256, ...}}}]
    <dir>/<field>-<id:05d>.npy       float16 array (n, *shape) for the shard's n keys
    <dir>/<field>-<id:05d>.off.npy   ragged fields only: int64 offsets (n + 1,) into the
                                     concatenated (sum T_i, *shape[1:]) data array

Every ``add`` writes new shard files then the index, each atomically (``.part``, fsync,
``os.replace``), so a crash leaves the previous consistent state. Checksums are verified
the first time a shard is read. Opening with another encoder identity raises
``IdentityMismatch``; a bad checksum raises ``CorruptShard``. One writer at a
time (the caller's job); readers see the index as of ``open``/``reload``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from embeddings.ml.atomic import atomic_write_bytes, sha256_file

__all__ = [
    "CorruptShard",
    "FORMAT_VERSION",
    "FeatureCache",
    "FeatureCacheError",
    "IdentityMismatch",
    "IncompatibleCache",
    "MissingKeys",
    "atomic_write_bytes",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
STORE_DTYPE = np.float16  # halves disk and RAM; far below the precision that retrieval needs
INDEX_NAME = "index.json"

FieldShape = tuple[int | None, ...]


class FeatureCacheError(Exception):
    """Base class of feature-cache errors."""


class IncompatibleCache(FeatureCacheError):
    """The cache on disk has another format version or other fields than asked for."""


class IdentityMismatch(IncompatibleCache):
    """The cache was written by another encoder (weights or preprocessing)."""


class CorruptShard(FeatureCacheError):
    """A shard file is missing or its sha256 does not match the index."""


class MissingKeys(FeatureCacheError, KeyError):
    """Some requested keys are not in the cache; ``.keys`` lists them."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        preview = ", ".join(self.keys[:5]) + (" ..." if len(self.keys) > 5 else "")
        super().__init__(f"{len(self.keys)} keys not in the feature cache: {preview}")


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()



def _write_npy(path: Path, arr: np.ndarray) -> str:
    data = _npy_bytes(arr)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


class FeatureCache:
    """Features of one encoder identity and view; see the module docstring."""

    def __init__(
        self,
        directory: str | Path,
        *,
        encoder_identity: str,
        fields: Mapping[str, Sequence[int | None]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Open the cache at ``directory``, creating it when ``fields`` are given.

        ``fields`` (name -> per-key shape) must match an existing cache exactly;
        ``meta`` (free-form JSON, e.g. ``{"view": "flip"}``) is stored on creation only.
        """
        self.directory = Path(directory)
        self.encoder_identity = encoder_identity
        self._loaded: dict[tuple[int, str], tuple[np.ndarray, np.ndarray | None]] = {}
        wanted = None if fields is None else {k: tuple(v) for k, v in fields.items()}
        if (self.directory / INDEX_NAME).is_file():
            self.reload()
            if wanted is not None and wanted != self.fields:
                raise IncompatibleCache(
                    f"{self.directory}: fields {self.fields} on disk, {wanted} requested"
                )
        elif wanted is None:
            raise FileNotFoundError(f"no feature cache at {self.directory} (pass fields to create)")
        else:
            self._create(wanted, dict(meta or {}))

    @classmethod
    def for_encoder(
        cls,
        root: str | Path,
        *,
        encoder_identity: str,
        view: str,
        fields: Mapping[str, Sequence[int | None]] | None = None,
    ) -> FeatureCache:
        """The cache of (encoder identity, view) under ``root``:
        ``<root>/<sha256(identity)[:16]>/<view>``, so a new encoder never meets old files."""
        if not view or not all(c.isalnum() or c in "-_" for c in view):
            raise ValueError(f"view must be a simple name, got {view!r}")
        digest = hashlib.sha256(encoder_identity.encode()).hexdigest()[:16]
        return cls(Path(root) / digest / view, encoder_identity=encoder_identity,
                   fields=fields, meta={"view": view})

    # -- index -------------------------------------------------------------------------
    def _create(self, fields: dict[str, FieldShape], meta: dict[str, Any]) -> None:
        for name, shape in fields.items():
            if not name.isidentifier():
                raise ValueError(f"field name must be an identifier, got {name!r}")
            if any(d is None for d in shape[1:]) or any(d is not None and d < 1 for d in shape):
                raise ValueError(f"bad shape {shape} for field {name!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fields = fields
        self.meta = meta
        self._shards: list[dict[str, Any]] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._write_index()

    def reload(self) -> None:
        """Re-read ``index.json`` (picks up shards added by another process)."""
        index = json.loads((self.directory / INDEX_NAME).read_text())
        if index.get("format_version") != FORMAT_VERSION:
            raise IncompatibleCache(
                f"{self.directory}: format_version {index.get('format_version')}, "
                f"this code reads {FORMAT_VERSION}"
            )
        if index["encoder_identity"] != self.encoder_identity:
            raise IdentityMismatch(
                f"{self.directory} holds features of {index['encoder_identity']!r}, "
                f"not {self.encoder_identity!r}"
            )
        self.fields = {k: tuple(v) for k, v in index["fields"].items()}
        self.meta = index.get("meta", {})
        self._shards = index["shards"]
        self._where = {}
        for pos, shard in enumerate(self._shards):
            for row, key in enumerate(shard["keys"]):
                self._where[key] = (pos, row)

    def _write_index(self) -> None:
        index = {
            "format_version": FORMAT_VERSION,
            "encoder_identity": self.encoder_identity,
            "dtype": np.dtype(STORE_DTYPE).name,
            "fields": {k: list(v) for k, v in self.fields.items()},
            "meta": self.meta,
            "shards": self._shards,
        }
        atomic_write_bytes(self.directory / INDEX_NAME, json.dumps(index).encode())

    # -- queries -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def keys(self) -> list[str]:
        """All keys in insertion order."""
        return [k for shard in self._shards for k in shard["keys"]]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The given keys that are not cached, in the given order."""
        return [k for k in keys if k not in self._where]

    # -- writing -----------------------------------------------------------------------
    def _check_batch(self, keys: Sequence[str], arrays: Mapping[str, Any]) -> None:
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate keys in one add()")
        present = [k for k in keys if k in self._where]
        if present:
            raise ValueError(f"{len(present)} keys already cached, e.g. {present[0]!r}")
        if set(arrays) != set(self.fields):
            raise ValueError(f"add() needs exactly the fields {sorted(self.fields)}")
        for name, shape in self.fields.items():
            value = arrays[name]
            if len(value) != len(keys):
                raise ValueError(f"field {name!r}: {len(value)} rows for {len(keys)} keys")
            if shape[0] is not None and tuple(np.shape(value)[1:]) != shape:
                raise ValueError(f"field {name!r}: rows of shape {np.shape(value)[1:]}, want {shape}")

    def add(self, keys: Sequence[str], arrays: Mapping[str, Any]) -> None:
        """Append one shard: ``arrays[field]`` is (n, *shape), or a list of n (T_i, ...) arrays
        for a ragged field. Keys must be new. Values are stored as float16 and must stay finite."""
        keys = [str(k) for k in keys]
        if not keys:
            return
        self._check_batch(keys, arrays)
        shard_id = 1 + max((s["id"] for s in self._shards), default=-1)
        files: dict[str, dict[str, str]] = {}
        for name, shape in self.fields.items():
            files[name] = self._write_field(name, shape, shard_id, arrays[name])
        self._shards.append({"id": shard_id, "keys": keys, "files": files})
        self._write_index()
        for row, key in enumerate(keys):
            self._where[key] = (len(self._shards) - 1, row)

    def _write_field(self, name: str, shape: FieldShape, shard_id: int, value: Any) -> dict:
        stem = f"{name}-{shard_id:05d}"
        with np.errstate(over="ignore"):  # overflow to inf is caught by the finiteness check
            data, offsets = self._as_stored(name, shape, value)
        if not np.isfinite(data).all():
            raise ValueError(f"field {name!r}: non-finite values (or beyond float16 range)")
        entry = {"name": f"{stem}.npy", "sha256": _write_npy(self.directory / f"{stem}.npy", data)}
        if offsets is not None:
            entry["offsets_name"] = f"{stem}.off.npy"
            entry["offsets_sha256"] = _write_npy(self.directory / f"{stem}.off.npy", offsets)
        return entry

    @staticmethod
    def _as_stored(name: str, shape: FieldShape, value: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(data, offsets): float16 (n, *shape), or ragged (sum T_i, ...) + int64 (n + 1,)."""
        if shape[0] is None:
            parts = [np.asarray(v) for v in value]
            for p in parts:
                if p.ndim != len(shape) or tuple(p.shape[1:]) != shape[1:]:
                    raise ValueError(f"field {name!r}: ragged row of shape {p.shape}, want {shape}")
            lengths = np.array([p.shape[0] for p in parts], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n + 1,)
            return np.concatenate(parts, axis=0).astype(STORE_DTYPE), offsets  # (sum T_i, ...)
        return np.asarray(value).astype(STORE_DTYPE), None  # (n, *shape)

    # -- reading -----------------------------------------------------------------------
    def _load_npy(self, name: str, expected_sha: str) -> np.ndarray:
        path = self.directory / name
        if not path.is_file():
            raise CorruptShard(f"shard file missing: {path}")
        if sha256_file(path) != expected_sha:
            raise CorruptShard(f"sha256 mismatch for {path}")
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def _field_arrays(self, pos: int, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        cached = self._loaded.get((pos, name))
        if cached is None:
            entry = self._shards[pos]["files"][name]
            data = self._load_npy(entry["name"], entry["sha256"])
            offsets = None
            if "offsets_name" in entry:
                offsets = np.asarray(self._load_npy(entry["offsets_name"], entry["offsets_sha256"]))
            cached = self._loaded[(pos, name)] = (data, offsets)
        return cached

    def get(
        self,
        keys: Sequence[str],
        fields: Sequence[str] | None = None,
        dtype: np.dtype | type | None = None,
    ) -> dict[str, Any]:
        """Features of ``keys`` in order: ``{field: (n, *shape) array}`` (a list of arrays for a
        ragged field), stored float16 unless ``dtype`` is given. Raises ``MissingKeys``."""
        names = list(self.fields) if fields is None else list(fields)
        unknown = [n for n in names if n not in self.fields]
        if unknown:
            raise ValueError(f"unknown fields {unknown}; cache has {sorted(self.fields)}")
        missing = self.missing(keys)
        if missing:
            raise MissingKeys(missing)
        where = np.array([self._where[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        out_dtype = np.dtype(dtype) if dtype is not None else np.dtype(STORE_DTYPE)
        return {name: self._gather(name, where, out_dtype) for name in names}

    def _gather(self, name: str, where: np.ndarray, dtype: np.dtype) -> Any:
        shape = self.fields[name]
        if shape[0] is None:
            out_list: list[np.ndarray | None] = [None] * len(where)
            for i, (pos, row) in enumerate(where):
                data, offsets = self._field_arrays(int(pos), name)
                if offsets is None:  # a variable-length field is always stored with its offsets
                    raise ValueError(f"field {name!r} of shard {int(pos)} has no offsets")
                out_list[i] = np.asarray(data[offsets[row] : offsets[row + 1]], dtype=dtype)
            return out_list
        fixed = cast("tuple[int, ...]", shape)  # only the first dimension may be None (handled above)
        out = np.empty((len(where), *fixed), dtype=dtype)
        for pos in np.unique(where[:, 0]):
            sel = np.nonzero(where[:, 0] == pos)[0]
            data, _ = self._field_arrays(int(pos), name)
            out[sel] = data[where[sel, 1]]  # fancy indexing reads only those rows of the mmap
        return out

    def verify(self) -> None:
        """Check every shard's checksum now (raises ``CorruptShard``)."""
        for pos in range(len(self._shards)):
            for name in self.fields:
                self._loaded.pop((pos, name), None)
                self._field_arrays(pos, name)
