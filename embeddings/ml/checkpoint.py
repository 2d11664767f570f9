"""Model checkpoints: safetensors weights plus a JSON manifest, written atomically.

A checkpoint is two files side by side:

- ``<stem>-<sha12>.safetensors``: the tensors, never pickled. The name carries a prefix of
  the file's sha256, so rewriting a checkpoint in place never overwrites the weights an
  existing manifest points at.
- ``<stem>.json``: the manifest: format name and version, the model config (a dataclass as
  a dict), free-form meta (vocabulary, encoder identities, ...), the weights file name, its
  size and sha256, and the name/shape/dtype of every tensor.

The manifest is written last, so a checkpoint whose writer was killed half-way is either
the previous complete one or absent, never a half-written one that looks complete. Loading
checks the format version, the weights' size and checksum and the tensor list before
handing anything back, and raises one of three typed errors.

Used by both model kinds (joint embedding, caption generator) and by the trainer's resume
state. Pure: no Django.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embeddings.ml.atomic import atomic_write_bytes, fsync_dir

logger = logging.getLogger(__name__)

FORMAT_NAME = "loupe-checkpoint"
FORMAT_VERSION = 1
DEFAULT_STEM = "checkpoint"
# A manifest is small (config + meta + vocabulary); anything bigger is not one of ours.
_MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class CheckpointError(Exception):
    """Base class: the checkpoint is missing or cannot be used."""


class IncompatibleCheckpoint(CheckpointError):
    """Well-formed, but written by another format version or for another model kind."""


class CorruptCheckpoint(CheckpointError):
    """Damaged or inconsistent: bad JSON, checksum mismatch, unreadable weights."""


def checkpoint_to_dict(model: torch.nn.Module, config: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Pure builder: (CPU copies of the model's tensors, the config as a plain dict).

    ``config`` may be a dataclass, an object with ``to_dict()`` or a mapping.
    """
    tensors = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    return tensors, config_as_dict(config)


def config_as_dict(config: Any) -> dict:
    """A config object as a JSON-ready dict."""
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dataclass, have to_dict() or be a mapping, got {type(config)!r}")


def manifest_path(dir_or_path: str | os.PathLike) -> Path:
    """The manifest a path names: ``x.json`` itself, or ``<dir>/checkpoint.json``."""
    p = Path(dir_or_path)
    if p.suffix == ".json":
        return p
    return p / f"{DEFAULT_STEM}.json"


def save_checkpoint(
    dir_or_path: str | os.PathLike,
    *,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> Path:
    """Write a checkpoint atomically and return its manifest path.

    ``dir_or_path`` is a directory (created if needed; files ``checkpoint.json`` and
    ``checkpoint-<sha12>.safetensors`` inside) or an explicit ``<stem>.json`` path.
    ``config`` and ``meta`` must be JSON-serialisable.
    """
    mpath = manifest_path(dir_or_path)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    blob = st_save(_contiguous(tensors))
    sha = hashlib.sha256(blob).hexdigest()
    wname = f"{mpath.stem}-{sha[:12]}.safetensors"
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": dict(config),
        "meta": dict(meta),
        "weights_file": wname,
        "weights_bytes": len(blob),
        "weights_sha256": sha,
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                    for k, v in sorted(tensors.items())},
    }
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False).encode()
    # Weights first, manifest last: the manifest's appearance is the commit point.
    _atomic_write(mpath.parent / wname, blob)
    _atomic_write(mpath, text)
    fsync_dir(mpath.parent)
    _remove_stale_weights(mpath, keep=wname)
    logger.debug("saved checkpoint %s (%d tensors, %d bytes)", mpath, len(tensors), len(blob))
    return mpath


def load_checkpoint(
    path: str | os.PathLike, *, expected_kind: str | None = None
) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Load ``(tensors, config, meta)`` after checking version, size, checksum and tensor list.

    ``path`` is a checkpoint directory or its ``.json`` manifest. ``expected_kind``, when
    given, must equal ``meta["kind"]``. Raises CheckpointError (missing),
    IncompatibleCheckpoint or CorruptCheckpoint. Never unpickles anything.
    """
    if Path(path).is_file() and Path(path).suffix != ".json":
        # e.g. a .pt/.bin handed in by mistake: refuse without parsing it.
        raise CorruptCheckpoint(f"{path}: not a checkpoint directory or .json manifest")
    mpath = manifest_path(path)
    manifest = _read_manifest(mpath)
    if expected_kind is not None and manifest["meta"].get("kind") != expected_kind:
        raise IncompatibleCheckpoint(
            f"{mpath}: a {manifest['meta'].get('kind')!r} checkpoint, expected {expected_kind!r}"
        )
    wpath = mpath.parent / manifest["weights_file"]
    try:
        blob = wpath.read_bytes()
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"{mpath}: weights file {wpath.name} is missing") from exc
    if len(blob) != manifest["weights_bytes"]:
        raise CorruptCheckpoint(f"{wpath}: {len(blob)} bytes, manifest says {manifest['weights_bytes']}")
    if hashlib.sha256(blob).hexdigest() != manifest["weights_sha256"]:
        raise CorruptCheckpoint(f"{wpath}: sha256 does not match the manifest (weights and JSON mismatch)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpoint(f"{wpath}: not a readable safetensors file: {exc}") from exc
    listed = {k: (v["shape"], v["dtype"]) for k, v in manifest["tensors"].items()}
    found = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    if listed != found:
        raise CorruptCheckpoint(f"{wpath}: tensors do not match the manifest's list (mismatch)")
    return tensors, manifest["config"], manifest["meta"]


def _read_manifest(mpath: Path) -> dict:
    try:
        size = mpath.stat().st_size
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CheckpointError(f"no checkpoint at {mpath}") from exc
    if size == 0 or size > _MAX_MANIFEST_BYTES:
        raise CorruptCheckpoint(f"{mpath}: manifest has implausible size {size}")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(f"{mpath}: manifest is not valid JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CorruptCheckpoint(f"{mpath}: not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IncompatibleCheckpoint(
            f"{mpath}: format version {manifest.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    required = {"config": dict, "meta": dict, "weights_file": str, "weights_bytes": int,
                "weights_sha256": str, "tensors": dict}
    for key, typ in required.items():
        if not isinstance(manifest.get(key), typ):
            raise CorruptCheckpoint(f"{mpath}: manifest field {key!r} missing or mistyped")
    # The weights must sit beside the manifest: no path tricks.
    if Path(manifest["weights_file"]).name != manifest["weights_file"]:
        raise CorruptCheckpoint(f"{mpath}: weights_file must be a bare file name")
    return manifest


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors sharing storage)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"tensor {k!r} is a {type(v).__name__}, not a Tensor")
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    # The folder is synced once after both files (save_checkpoint), not after each.
    atomic_write_bytes(path, data, sync_dir=False)


def _remove_stale_weights(mpath: Path, *, keep: str) -> None:
    """Delete weights files of earlier versions of this checkpoint (same stem)."""
    for old in mpath.parent.glob(f"{mpath.stem}-*.safetensors"):
        suffix = old.name[len(mpath.stem) + 1 : -len(".safetensors")]
        if old.name != keep and len(suffix) == 12 and all(c in "0123456789abcdef" for c in suffix):
            old.unlink(missing_ok=True)
