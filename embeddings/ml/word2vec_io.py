"""Word2vec checkpoint files: one safetensors file, vectors as a tensor, the rest as JSON metadata.

Layout: tensor "vectors" (V, D) float32; metadata "format", "format_version", "payload" (JSON of
`Word2Vec.to_dict()` without the tensor: config, words, counts, epoch_losses) and "sha256" over
the payload and the raw vector bytes, checked before the model is rebuilt. Files are written to
`<path>.part`, fsynced and renamed, so a reader never sees half a file.

Only the trained vectors are kept, not gensim's own model file (a pickle, and 3x the size with
the output weights and training state that queries never need): the product never resumes
training a collection's word2vec, it trains afresh.

Format versions: 2 (gensim's config: lr/min_lr/workers); 1 was written by the torch trainer
that gensim replaced (its config had batch_size/optimizer/min_lr_ratio/table_size). Version 1
files still load: the vectors are the same kind of thing, and the config keys both share are
kept (the trainer-only ones describe a trainer that no longer exists).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from embeddings.ml.atomic import atomic_write_bytes
from embeddings.ml.word2vec import Word2Vec

FORMAT = "loupe.word2vec"
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")
# Keys of a version-1 (torch trainer) config that the gensim config shares.
_V1_SHARED = ("dim", "window", "min_count", "negatives", "sample", "ns_exponent", "epochs", "seed")


class CheckpointError(ValueError):
    """A word2vec file that cannot be loaded."""


class IncompatibleCheckpoint(CheckpointError):
    """Another format, or a format version this code does not read."""


class CorruptCheckpoint(CheckpointError):
    """Unreadable, truncated, or failing its checksum."""


def _digest(payload: str, vectors: torch.Tensor) -> str:
    h = hashlib.sha256(payload.encode("utf-8"))
    h.update(vectors.contiguous().numpy().tobytes())
    return h.hexdigest()


def word2vec_to_bytes(model: Word2Vec) -> bytes:
    data = model.to_dict()
    vectors = data.pop("vectors").contiguous()
    payload = json.dumps(data, sort_keys=True, ensure_ascii=False)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "payload": payload,
        "sha256": _digest(payload, vectors),
    }
    return st_save({"vectors": vectors}, metadata=metadata)


def word2vec_from_bytes(blob: bytes) -> Word2Vec:
    try:
        header_len = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8 : 8 + header_len]).get("__metadata__") or {}
        vectors = st_load(blob)["vectors"]
    except (SafetensorError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"unreadable word2vec file: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise IncompatibleCheckpoint(f"not a word2vec file (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IncompatibleCheckpoint(
            f"word2vec format version {version!r}, this code reads {', '.join(READABLE_VERSIONS)}"
        )
    payload = metadata.get("payload", "")
    if _digest(payload, vectors) != metadata.get("sha256"):
        raise CorruptCheckpoint("word2vec file fails its sha256 check")
    data = json.loads(payload)
    if version == "1":
        data["config"] = {k: v for k, v in data["config"].items() if k in _V1_SHARED}
    data["vectors"] = vectors
    return Word2Vec.from_dict(data)


def save_word2vec(model: Word2Vec, path: str | os.PathLike[str]) -> Path:
    """Write atomically: `<path>.part`, fsync, rename."""
    path = Path(path)
    atomic_write_bytes(path, word2vec_to_bytes(model))
    return path


def load_word2vec(path: str | os.PathLike[str]) -> Word2Vec:
    return word2vec_from_bytes(Path(path).read_bytes())
