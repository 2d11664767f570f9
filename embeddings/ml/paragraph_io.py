"""Paragraph-model folders: gensim's own files, the image index as safetensors, a manifest. Pure.

A folder holds:

- ``doc2vec-<mode>.model`` (and any ``doc2vec-<mode>.model.*.npy`` gensim splits off): each
  Doc2Vec in gensim's native format. Inference needs the whole trained network (word vectors,
  output weights, vocabulary counts, sampling tables), which gensim only saves this way; it is
  a pickle, so it is opened only after its sha256 matches both the manifest and, when the
  caller passes them, the digests recorded in the database when our trainer wrote it.
- ``index.safetensors``: ``image_ids`` (N,) int64, ``vectors`` (N, D) float32 unit (in the
  ParagraphSpace), ``source`` (N,) uint8 (SOURCE_TRAINED / _INFERRED / _MAPPED), ``center`` (D,)
  of the space, ``map_weight`` (F, D) and ``map_bias`` (D,) of the image map, ``mapped_offset``
  (1,). Never pickled.
- ``manifest.json`` (last): format name and version, the ParagraphConfig, the seed, meta, and
  the sha256 of every other file.

The folder is written as ``<folder>.part`` and renamed into place, so a reader sees the old
folder or the complete new one. Errors are the checkpoint module's typed ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle  # nosec B403: only for the error type gensim's loader raises; see load_paragraph
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as st_load_file
from safetensors.numpy import save_file as st_save_file

from embeddings.ml.atomic import atomic_write_bytes, fsync_dir, sha256_file
from embeddings.ml.checkpoint import CheckpointError, CorruptCheckpoint, IncompatibleCheckpoint
from embeddings.ml.config_dict import dataclass_from_dict
from embeddings.ml.paragraph import SOURCE_MAPPED, ImageMap, ParagraphConfig, ParagraphSpace, ParagraphVectors

FORMAT = "loupe.paragraph"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.safetensors"
_MAX_MANIFEST_BYTES = 1 << 20

__all__ = ["CheckpointError", "ParagraphIndex", "load_paragraph", "save_paragraph"]


@dataclass
class ParagraphIndex:
    """A trained paragraph model with the vectors of the images it was built for.

    ``mapped_offset`` is subtracted from the score of every image placed by the image map: the
    measured hubness gap between mapped vectors and real documents (embeddings.ml.paragraph), so
    a mapped image ranks above a described one only when it is clearly closer."""

    vectors_model: ParagraphVectors
    space: ParagraphSpace
    image_map: ImageMap
    image_ids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, D) float32 unit, in `space`
    source: np.ndarray  # (N,) uint8
    mapped_offset: float = 0.0
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), D) unit query vectors in the index's space."""
        return self.space(self.vectors_model.infer(texts))

    def __post_init__(self) -> None:
        order = np.argsort(self.image_ids, kind="stable")
        self.image_ids, self.vectors, self.source = self.image_ids[order], self.vectors[order], self.source[order]

    def position(self, image_id: int) -> int | None:
        i = int(np.searchsorted(self.image_ids, image_id))
        return i if i < len(self.image_ids) and self.image_ids[i] == image_id else None

    def search(self, query: np.ndarray, allowed: np.ndarray, k: int) -> list[tuple[int, float, int]]:
        """[(image id, cosine, source)] of the k best among ``allowed`` ids, best first
        (brute force: the index is one vector per image of the trained collections)."""
        mask = np.isin(self.image_ids, allowed)
        rows = np.flatnonzero(mask)
        if len(rows) == 0 or k < 1:
            return []
        scores = self.vectors[rows] @ np.asarray(query, np.float32).reshape(-1)
        scores = scores - np.where(self.source[rows] == SOURCE_MAPPED, np.float32(self.mapped_offset), 0)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(self.image_ids[rows[j]]), float(scores[j]), int(self.source[rows[j]])) for j in top]



def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_paragraph(directory: str | os.PathLike[str], index: ParagraphIndex) -> dict[str, str]:
    """Write the folder atomically (``<dir>.part`` then rename); return {file name: sha256}."""
    directory = Path(directory)
    part = directory.with_name(directory.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        for mode, model in index.vectors_model.models.items():
            model.save(str(part / f"doc2vec-{mode}.model"))
        st_save_file({"image_ids": np.ascontiguousarray(index.image_ids, np.int64),
                      "vectors": np.ascontiguousarray(index.vectors, np.float32),
                      "source": np.ascontiguousarray(index.source, np.uint8),
                      "center": np.ascontiguousarray(index.space.center, np.float32),
                      "mapped_offset": np.asarray([index.mapped_offset], np.float32),
                      "map_weight": np.ascontiguousarray(index.image_map.weight, np.float32),
                      "map_bias": np.ascontiguousarray(index.image_map.bias, np.float32)}, str(part / INDEX))
        files = {}
        for path in sorted(part.iterdir()):
            _fsync(path)
            files[path.name] = sha256_file(path)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "config": dataclasses.asdict(index.vectors_model.config), "seed": index.vectors_model.seed,
                    "modes": list(index.vectors_model.models), "meta": index.meta, "files": files}
        atomic_write_bytes(part / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), sync_dir=True)
        files[MANIFEST] = sha256_file(part / MANIFEST)
        if directory.exists():  # a previous attempt of the same run: replaced whole
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(part, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(part, directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    return files


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise CorruptCheckpoint(f"{path}: too large for a manifest")
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"no paragraph model at {directory}") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IncompatibleCheckpoint(f"{path}: not a paragraph model (format {data.get('format')!r})"
                                     if isinstance(data, dict) else f"{path}: not a manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise IncompatibleCheckpoint(f"{path}: format version {data.get('format_version')!r}, "
                                     f"this code reads {FORMAT_VERSION}")
    return data


def _check_files(directory: Path, listed: Any, expected: Mapping[str, str] | None) -> None:
    """Every listed file exists and has its sha256; with ``expected`` (the database's record),
    the two lists agree too. Runs before anything is unpickled."""
    if not isinstance(listed, Mapping) or not listed:
        raise CorruptCheckpoint(f"{directory}: the manifest lists no files")
    for name, digest in listed.items():
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise CorruptCheckpoint(f"{directory}: missing or misnamed file {name!r}")
        if expected is not None and expected.get(name) != digest:
            raise CorruptCheckpoint(f"{directory}: {name} is not the file the model version recorded")
        if sha256_file(path) != digest:
            raise CorruptCheckpoint(f"{directory}: {name} fails its sha256 check")


def load_paragraph(directory: str | os.PathLike[str], *, expected_files: Mapping[str, str] | None = None
                   ) -> ParagraphIndex:
    """The folder's model and index. With ``expected_files`` (what the database recorded when the
    trainer wrote the folder; an empty mapping refuses everything) a file must match it as well as
    the manifest before gensim unpickles anything; without it only the folder's own integrity is
    checked, so callers that load files they did not write must pass it (embeddings.runtime does)."""
    from gensim.models.doc2vec import Doc2Vec

    directory = Path(directory)
    manifest = read_manifest(directory)
    _check_files(directory, manifest.get("files"), expected_files)
    try:
        config = dataclass_from_dict(ParagraphConfig, manifest["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IncompatibleCheckpoint(f"{directory}: bad config: {exc}") from exc
    if list(manifest.get("modes") or []) != list(config.modes):
        raise CorruptCheckpoint(f"{directory}: modes {manifest.get('modes')} do not match the config")
    try:
        models = {m: Doc2Vec.load(str(directory / f"doc2vec-{m}.model")) for m in config.modes}
        arrays = st_load_file(str(directory / INDEX))
    except (OSError, SafetensorError, ValueError, EOFError, AttributeError, ImportError,
            pickle.UnpicklingError) as exc:
        raise CorruptCheckpoint(f"{directory}: unreadable model files: {exc}") from exc
    for m, model in models.items():
        if not isinstance(model, Doc2Vec) or model.vector_size != config.vector_size:
            raise CorruptCheckpoint(f"{directory}: doc2vec-{m}.model does not match the config")
    vectors = arrays["vectors"]
    shapes = {"map_weight": (config.image_dim, config.dim), "map_bias": (config.dim,), "center": (config.dim,),
              "mapped_offset": (1,)}
    if vectors.ndim != 2 or vectors.shape[1] != config.dim or any(
            name not in arrays or arrays[name].shape != shape for name, shape in shapes.items()):
        raise CorruptCheckpoint(f"{directory}: index shapes do not match the config")
    return ParagraphIndex(ParagraphVectors(config=config, models=models, seed=int(manifest.get("seed", 0))),
                          ParagraphSpace(center=arrays["center"]),
                          ImageMap(weight=arrays["map_weight"], bias=arrays["map_bias"]),
                          image_ids=arrays["image_ids"].astype(np.int64), vectors=vectors.astype(np.float32),
                          source=arrays["source"].astype(np.uint8), mapped_offset=float(arrays["mapped_offset"][0]),
                          meta=dict(manifest.get("meta") or {}))
