"""Issue 20 item 6, measured without a browser: plain one-object queries on the demo collection.

Usage (from the repo root):

    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_queries.py [--shipped models/embedding-open-vocab] \
        [--previous var/models/embedding-flickr8k-previous]

Encodes the demo collection a fresh `make run` imports (embeddings/ingest/demo.py: 20 photos
shipped inside scikit-image and scikit-learn) with EfficientNet-Lite0 and ranks its pictures for
each query with ConSE v0, the previous default embedding and the shipped one, through the
serving Embedder API (encode_texts / encode_features). Prints the rank of the intended picture
per query and how many are in the top 3 / first. The browser test of the issue is not this.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUERIES = {  # query -> the demo file it names
    "a cat": "chelsea.png", "a rocket": "rocket.jpg", "a cup of coffee": "coffee.png", "the moon": "moon.png",
    "an astronaut": "astronaut.png", "a motorcycle": "motorcycle_left.png", "a horse": "horse.png",
    "a flower": "flower.jpg", "coins": "coins.png", "a camera": "camera.png", "a brick wall": "brick.png",
    "a clock": "clock_motion.png",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shipped", type=Path, default=REPO / "models" / "embedding-open-vocab")
    p.add_argument("--previous", type=Path, default=REPO / "var" / "models" / "embedding-flickr8k-previous")
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    from embeddings.ingest.demo import demo_items
    from embeddings.ml.conse import class_vectors, load_class_names
    from embeddings.ml.embedder import ConseEmbedder, JointEmbedder
    from embeddings.ml.image_encoder import ImageEncoder
    from embeddings.ml.text_encoder import TextEncoder
    from embeddings.ml.transforms import batch_tensors, load_rgb

    items = demo_items()
    names = [it.name for it in items]
    image_enc, text_enc = ImageEncoder(), TextEncoder()
    feats = {k: v.numpy() for k, v in image_enc.encode(batch_tensors([load_rgb(it.path) for it in items])).items()}
    text = lambda t: text_enc.encode(t).numpy()  # noqa: E731
    fc = image_enc.backbone._fc
    classify = lambda x: fc(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    models = {"conse_v0": ConseEmbedder(text, class_vectors(load_class_names(), text), classify)}
    if args.previous.is_dir():
        models["previous_joint"] = JointEmbedder.from_checkpoint(args.previous, text)
    models["shipped"] = JointEmbedder.from_checkpoint(args.shipped, text)
    out = {}
    for name, model in models.items():
        img = model.encode_features(feats)  # (20, dim)
        q = model.encode_texts(list(QUERIES))  # (12, dim), one text-tower pass for all queries
        ranks = {}
        for row, (query, target) in enumerate(QUERIES.items()):
            order = np.argsort(-(img @ q[row]))
            ranks[query] = int(np.where(np.array(names)[order] == target)[0][0]) + 1
        out[name] = {"ranks": ranks, "top3": sum(r <= 3 for r in ranks.values()),
                     "first": sum(r == 1 for r in ranks.values()), "images": len(names)}
        print(json.dumps({name: out[name]}), flush=True)


if __name__ == "__main__":
    main()
