"""Features of bench/caption_labels.py: Lite0 pooled, spatial map and ImageNet logits of the
Flickr8k dev images and of the out-of-domain dev set, encoded once and cached as .npz.

Usage (resumable by file; 2 threads at most on the shared machine):

    OMP_NUM_THREADS=2 .venv/bin/python bench/caption_labels_data.py [--cache var/caption-labels]

The spatial map is stored as float16 (halves the file; the decoder reads it back as float32).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from query_encoder_data import FLICKR, flickr8k_dev, ood_dev  # noqa: E402

DEFAULT_CACHE = REPO / "var" / "caption-labels"


def features(paths: list[Path], cache_file: Path, batch: int = 25) -> dict[str, np.ndarray]:
    """{"pooled" (N, 1280), "spatial" (N, 49, 1280) float16, "logits" (N, 1000)} of `paths`."""
    names = [str(p) for p in paths]
    if cache_file.is_file():
        data = np.load(cache_file, allow_pickle=False)
        if list(data["names"]) == names:
            return {k: data[k] for k in ("pooled", "spatial", "logits")}
    from PIL import Image

    from embeddings.ml.image_encoder import ImageEncoder
    from embeddings.ml.transforms import batch_tensors

    enc = ImageEncoder()
    out: dict[str, list[np.ndarray]] = {"pooled": [], "spatial": [], "logits": []}
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[start:start + batch]]
        got = enc.encode(batch_tensors(imgs))
        out["pooled"].append(got["pooled"].numpy())
        out["spatial"].append(got["spatial"].numpy().astype(np.float16))
        out["logits"].append(got["logits"].numpy())
        done = start + len(imgs)
        print(f"  {cache_file.name}: {done}/{len(paths)} images, {done / (time.perf_counter() - t0):.1f}/s",
              file=sys.stderr, flush=True)
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    part = cache_file.with_suffix(".part.npz")
    np.savez(part, names=np.array(names), **arrays)
    part.replace(cache_file)
    return arrays


def eval_sets(cache: Path = DEFAULT_CACHE) -> dict[str, dict]:
    """{"flickr8k_dev": {names, feats, refs (list of caption lists)}, "ood_dev": {..., texts}}."""
    names, texts, owner = flickr8k_dev()
    refs: list[list[str]] = [[] for _ in names]
    for text, i in zip(texts, owner.tolist()):
        refs[i].append(text)
    f8k = features([FLICKR / "images" / n for n in names], cache / "flickr8k-dev.npz")
    paths, otexts, _ = ood_dev()
    ood = features(paths, cache / "ood-dev.npz")
    return {"flickr8k_dev": {"names": names, "feats": f8k, "refs": refs},
            "ood_dev": {"names": [p.name for p in paths], "feats": ood, "texts": otexts}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name, s in eval_sets(args.cache).items():
        print(name, {k: v.shape for k, v in s["feats"].items()})


if __name__ == "__main__":
    main()
