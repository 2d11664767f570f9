"""Evaluation sets of bench/query_encoder.py: Flickr8k dev and the out-of-domain dev set, as
pooled Lite0 image features (encoded once, cached as .npz under --cache) and caption texts.

Usage (prepare the caches alone, resumable by file):

    OMP_NUM_THREADS=1 .venv/bin/python bench/query_encoder_data.py [--cache var/bench/query-encoder]

Only the text tower changes between the arms of bench/query_encoder.py, so the image features
are computed once here and shared by every arm.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLICKR = REPO.parent / "shared" / "data" / "flickr8k"
OOD = REPO / "var" / "ood"  # bench/build_ood_set.py --out var/ood
DEFAULT_CACHE = REPO / "var" / "bench" / "query-encoder"


def flickr8k_dev(data: Path = FLICKR) -> tuple[list[str], list[str], np.ndarray]:
    """(image file names in split-file order, captions, (C,) owner index of each caption)."""
    images = (data / "Flickr_8k.devImages.txt").read_text().split()
    index = {name: i for i, name in enumerate(images)}
    texts, owner = [], []
    for line in (data / "Flickr8k.token.txt").read_text().splitlines():
        key, text = line.split("\t", 1)
        name = key.split("#")[0]
        if name in index:
            texts.append(text.strip())
            owner.append(index[name])
    return images, texts, np.asarray(owner, dtype=np.int64)


def ood_dev(root: Path = OOD) -> tuple[list[Path], list[str], np.ndarray]:
    """(image paths, one sentence per image, owner index) of bench/build_ood_set.py's set."""
    body = json.loads((root / "dataset_ood.json").read_text())
    paths = [root / "images" / img["filename"] for img in body["images"]]
    texts = [img["sentences"][0]["raw"] for img in body["images"]]
    return paths, texts, np.arange(len(texts), dtype=np.int64)


def pooled_features(paths: list[Path], cache_file: Path, batch: int = 32) -> np.ndarray:
    """(N, 1280) pooled Lite0 features of `paths`, computed once and kept in `cache_file`."""
    if cache_file.is_file():
        data = np.load(cache_file, allow_pickle=False)
        if list(data["names"]) == [str(p) for p in paths]:
            return data["pooled"]
    from PIL import Image

    from embeddings.ml.image_encoder import ImageEncoder
    from embeddings.ml.transforms import batch_tensors

    enc = ImageEncoder()
    out, t0 = [], time.perf_counter()
    for start in range(0, len(paths), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[start:start + batch]]
        out.append(enc.encode(batch_tensors(imgs), fields=("pooled",))["pooled"].numpy())
        done = start + len(imgs)
        print(f"  {cache_file.name}: {done}/{len(paths)} images, {done / (time.perf_counter() - t0):.1f}/s",
              file=sys.stderr, flush=True)
    pooled = np.concatenate(out).astype(np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    part = cache_file.with_suffix(".part.npz")
    np.savez(part, pooled=pooled, names=np.array([str(p) for p in paths]))
    part.replace(cache_file)
    return pooled


def eval_sets(cache: Path = DEFAULT_CACHE) -> dict[str, dict]:
    """{"flickr8k_dev": {...}, "ood_dev": {...}}: pooled (N, 1280), texts, owner (C,)."""
    names, texts, owner = flickr8k_dev()
    f8k = pooled_features([FLICKR / "images" / n for n in names], cache / "flickr8k-dev-lite0.npz")
    paths, otexts, oowner = ood_dev()
    ood = pooled_features(paths, cache / "ood-dev-lite0.npz")
    return {"flickr8k_dev": {"pooled": f8k, "texts": texts, "owner": owner},
            "ood_dev": {"pooled": ood, "texts": otexts, "owner": oowner}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sets = eval_sets(args.cache)
    for name, s in sets.items():
        print(name, s["pooled"].shape, len(s["texts"]), "captions")


if __name__ == "__main__":
    main()
