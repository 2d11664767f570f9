"""Batch feature extraction as reader -> mapper -> writer (the clip-retrieval shape).

- reader: ``image_batches(paths, view=..., batch_size=...)`` yields ``(keys, images)``
  with ``images`` (B, 3, 224, 224) from ``transforms.view_tensor``; any iterable of
  ``(keys, tensor)`` batches (a DataLoader, a Django queryset adapter) works instead.
- mapper: any callable ``(B, 3, H, W) tensor -> {field: (B, ...) array or tensor}``,
  normally ``ImageEncoder.encode``; tests inject a tiny fake.
- writer: a ``FeatureCache``; rows are buffered and flushed every ``flush_every`` items, so
  an interrupted run keeps what it flushed and a rerun encodes only the missing keys.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, cast

import numpy as np
import torch

from embeddings.ml.feature_cache import FeatureCache, IdentityMismatch
from embeddings.ml.transforms import load_rgb, view_tensor

__all__ = ["EncodeReport", "encode_images", "image_batches"]

logger = logging.getLogger(__name__)

Batch = tuple[list[str], torch.Tensor]
Mapper = Callable[[torch.Tensor], Mapping[str, Any]]
ProgressFn = Callable[[int, int | None], None]


@dataclass(frozen=True)
class EncodeReport:
    encoded: int  # rows newly written
    skipped: int  # rows already in the cache
    seconds: float  # wall time of the whole call


def _default_key(path: str | Path) -> str:
    return Path(path).name


def image_batches(
    paths: Sequence[str | Path],
    *,
    view: str = "orig",
    batch_size: int = 32,
    key_fn: Callable[[str | Path], str] = _default_key,
) -> Iterator[Batch]:
    """Read images from disk in order and yield ``(keys, (B, 3, 224, 224) tensor)``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        tensors = [view_tensor(load_rgb(p), view) for p in chunk]
        yield [key_fn(p) for p in chunk], torch.stack(tensors)


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)


class _Buffer:
    """Rows waiting to be written as one shard."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = list(fields)
        self.clear()

    def clear(self) -> None:
        self.keys: list[str] = []
        self.parts: dict[str, list[np.ndarray]] = {f: [] for f in self.fields}

    def extend(self, keys: list[str], out: Mapping[str, Any]) -> None:
        missing = [f for f in self.fields if f not in out]
        if missing:
            raise KeyError(f"mapper output lacks fields {missing}")
        self.keys.extend(keys)
        for f in self.fields:
            self.parts[f].append(_to_numpy(out[f]))

    def flush(self, cache: FeatureCache) -> None:
        if self.keys:
            cache.add(self.keys, {f: np.concatenate(p) for f, p in self.parts.items()})
        self.clear()


def _is_path_list(source: Any) -> TypeGuard[Sequence[str | Path]]:
    if isinstance(source, (str, bytes)):
        raise TypeError("pass a sequence of paths, not a single path")
    return isinstance(source, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in source)


def encode_images(
    source: Sequence[str | Path] | Iterable[Batch],
    mapper: Mapper,
    cache: FeatureCache,
    *,
    batch_size: int = 32,
    view: str = "orig",
    flush_every: int = 1024,
    on_progress: ProgressFn | None = None,
    key_fn: Callable[[str | Path], str] = _default_key,
) -> EncodeReport:
    """Encode every image not yet in ``cache`` and store the cache's fields.

    ``source`` is a sequence of image paths (read with ``image_batches``, keys from
    ``key_fn``, view ``view``) or an iterable of ``(keys, images)`` batches. ``mapper``
    may return more fields than the cache holds; extra ones are ignored. If ``mapper`` (or
    the object it is bound to) has an ``identity``, it must equal the cache's.
    ``on_progress(done, total)`` is called after each batch (``total`` None when unknown).
    """
    identity = getattr(mapper, "identity", None) or getattr(
        getattr(mapper, "__self__", None), "identity", None
    )
    if identity is not None and identity != cache.encoder_identity:
        raise IdentityMismatch(f"mapper is {identity!r}, cache is {cache.encoder_identity!r}")
    started = time.perf_counter()
    skipped, total = 0, None
    if _is_path_list(source):
        todo = [p for p in source if key_fn(p) not in cache]
        skipped, total = len(source) - len(todo), len(todo)
        batches: Iterable[Batch] = image_batches(
            todo, view=view, batch_size=batch_size, key_fn=key_fn
        )
    else:
        batches = cast(Iterable[Batch], source)  # not a path list, so the (keys, images) form
    buffer, done = _Buffer(cache.fields), 0
    for keys, images in batches:
        keep = [i for i, k in enumerate(keys) if k not in cache and k not in buffer.keys]
        skipped += len(keys) - len(keep)
        if keep:
            if len(keep) < len(keys):
                images, keys = images[keep], [keys[i] for i in keep]
            buffer.extend(list(keys), mapper(images))
            done += len(keys)
        if len(buffer.keys) >= flush_every:
            buffer.flush(cache)
        if on_progress is not None:
            on_progress(done, total)
    buffer.flush(cache)
    seconds = time.perf_counter() - started
    logger.info("encoded %d images (%d skipped) in %.1fs", done, skipped, seconds)
    return EncodeReport(encoded=done, skipped=skipped, seconds=seconds)
