"""Issue 20 item 2, zero-shot part: ConSE v0 over EfficientNet-Lite0, Lite2 and both, on both dev sets.

Usage (from the repo root, after bench/cache_flickr8k.py and bench/build_ood_set.py):

    OMP_NUM_THREADS=2 .venv/bin/python bench/lite2_conse.py [--threads 2]

Encodes the Flickr8k dev images (1,000) and the out-of-domain dev images (680) with
EfficientNet-Lite2 at its native 260 px (pooled + logits; cached in var/cache/lite2-<split>.npz,
so a rerun only scores), reports the encoder's images/s, and scores ConSE v0 (k=5, T=2, bare
class names) with each classifier and with the two combined (the mean of their softmax
probabilities, i.e. a classifier ensemble). Training on Lite2 features needs the 6,000 train
images encoded too (about an hour on this shared 2-core machine): not done here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddings.ml.conse import conse_image_vectors  # noqa: E402
from embeddings.ml.image_encoder import LITE2, ImageEncoder  # noqa: E402
from embeddings.ml.transforms import batch_tensors, load_rgb  # noqa: E402
from bench.cached_features import load_split, read_manifest  # noqa: E402
from training.ml.retrieval_metrics import retrieval_metrics  # noqa: E402


def encode(paths: list[Path], enc: ImageEncoder, out: Path) -> tuple[dict[str, np.ndarray], float | None]:
    if out.is_file():
        data = np.load(out)
        return {k: data[k] for k in data.files}, None
    pooled, logits, started = [], [], time.perf_counter()
    for start in range(0, len(paths), 16):
        imgs = [load_rgb(p) for p in paths[start:start + 16]]
        feats = enc.encode(batch_tensors(imgs, size=enc.image_size), fields=("pooled", "logits"))
        pooled.append(feats["pooled"].numpy())
        logits.append(feats["logits"].numpy())
    rate = len(paths) / (time.perf_counter() - started)
    result = {"pooled": np.concatenate(pooled), "logits": np.concatenate(logits)}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **result)
    return result, rate


def softmax(x: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = x / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "flickr8k")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flickr8k")
    p.add_argument("--ood", type=Path, default=REPO / "var" / "ood")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", action="store_true",
                   help="also encode the 6,000 train images (var/cache/lite2-train.npz) "
                        "for bench/prior_flickr8k.py --encoder")
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(args.threads)
    enc = ImageEncoder(model_name=LITE2)
    cv = np.load(args.ood / "class_vectors.npy")  # bare class names, as ConSE v0 (bench/prior_flickr8k.py)
    dev_files = read_manifest(args.cache)["splits"]["dev"]
    dev = load_split(args.cache, "dev").data
    ood0 = np.load(args.ood / "features-lite0.npz")
    body = json.loads((args.ood / "dataset_ood.json").read_text())
    ood_paths = [args.ood / "images" / img["filename"] for img in body["images"]]
    f_dev, r_dev = encode([args.data / "images" / f for f in dev_files], enc, REPO / "var" / "cache" / "lite2-dev.npz")
    f_ood, r_ood = encode(ood_paths, enc, REPO / "var" / "cache" / "lite2-ood.npz")
    if args.train:
        train_files = read_manifest(args.cache)["splits"]["train"]
        _, r_train = encode([args.data / "images" / f for f in train_files], enc,
                            REPO / "var" / "cache" / "lite2-train.npz")
        print(json.dumps({"lite2_images_per_s": {"flickr8k_train": r_train}}), flush=True)
        return
    lite0 = ImageEncoder()
    fc = lite0.backbone._fc
    l0_dev = dev.image_feats[:, 0].float().numpy() @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sets = {"flickr8k_dev": (unit(dev.text_feats.float().numpy()), dev.text_image.numpy()),
            "ood_dev": (ood0["text"], np.arange(len(ood0["text"])))}
    logits = {"lite0": {"flickr8k_dev": l0_dev, "ood_dev": ood0["logits"]},
              "lite2": {"flickr8k_dev": f_dev["logits"], "ood_dev": f_ood["logits"]}}
    # Ensemble: ConSE takes logits; log of the mean probability is a valid logit vector.
    logits["lite0+lite2"] = {s: np.log(0.5 * softmax(logits["lite0"][s]) + 0.5 * softmax(logits["lite2"][s]))
                             for s in sets}
    print(json.dumps({"lite2_images_per_s": {"flickr8k_dev": r_dev, "ood_dev": r_ood}}))
    for name, per_set in logits.items():
        row = {"variant": f"conse_v0[{name}]"}
        for s, (txt, owner) in sets.items():
            # The ensemble's "logits" are log-probabilities: T=2 on them = ConSE's T on the probabilities.
            row[s] = retrieval_metrics(conse_image_vectors(per_set[s], cv), txt, owner)
        print(json.dumps(row), flush=True)
        with open(REPO / "var" / "bench" / "prior_results.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
