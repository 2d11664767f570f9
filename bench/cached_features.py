"""Load a split of cached encoder features (bench/cache_flickr8k.py layout) as EmbeddingData.

The cache root holds ``manifest.json`` (splits, captions per image, encoder identities) and
one ``FeatureCache`` folder per image view (``image/orig``, ``image/flip``, ...) and per text
field (``text/sentence``). Images come in split-file order, captions in token-file order
(five per image); ``text_image`` maps each caption to its image's row. Pure: no Django.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch

from embeddings.ml.feature_cache import FeatureCache
from training.ml.embedding_task import EmbeddingData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedSplit:
    data: EmbeddingData
    image_keys: list[str]  # file names, row order of data.image_feats
    caption_keys: list[str]  # "<file>#<n>", row order of data.text_feats
    views: tuple[str, ...]  # view names, in data.image_feats' second dimension


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no feature cache manifest at {path} (run bench/cache_flickr8k.py)")
    return json.loads(path.read_text())


def available_views(root: str | Path, field: str) -> list[str]:
    """Image views whose cache has ``field`` (from the manifest), orig first."""
    views = read_manifest(root)["image_views"]
    names = [v for v, fields in views.items() if field in fields]
    return sorted(names, key=lambda v: (v != "orig", v))


def load_split(root: str | Path, split: str, *, image_field: str = "pooled",
               views: Sequence[str] = ("orig",), text_field: str = "sentence",
               limit: int | None = None) -> CachedSplit:
    """Features of one split as float16 tensors: image (N, V, *field shape), text (5N, D).

    ``views`` must start with "orig" (view 0 is what dev evaluation uses). Raises
    feature_cache.MissingKeys if the cache is not complete for this split yet.
    """
    root = Path(root)
    if not views or views[0] != "orig":
        raise ValueError("views must start with 'orig'")
    manifest = read_manifest(root)
    files = list(manifest["splits"][split])[:limit]
    image_views = []
    for view in views:
        cache = FeatureCache(root / "image" / view, encoder_identity=manifest["image_encoder_identity"])
        arr = cache.get(files, fields=[image_field])[image_field]  # (N, *shape) float16
        image_views.append(torch.from_numpy(np.ascontiguousarray(arr)))
    image_feats = torch.stack(image_views, dim=1)  # (N, V, *shape)
    del image_views
    caption_keys, owner = [], []
    for row, name in enumerate(files):
        for key, _ in manifest["captions"][name]:
            caption_keys.append(key)
            owner.append(row)
    text_cache = FeatureCache(root / "text" / text_field, encoder_identity=manifest["text_encoder_identity"])
    text = torch.from_numpy(np.ascontiguousarray(text_cache.get(caption_keys, fields=[text_field])[text_field]))
    data = EmbeddingData(image_feats, text, torch.tensor(owner, dtype=torch.long))
    logger.info("loaded %s: %d images x %d views, %d captions", split, len(files), len(views), len(owner))
    return CachedSplit(data=data, image_keys=files, caption_keys=caption_keys, views=tuple(views))
