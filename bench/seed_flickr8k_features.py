"""Seed the Django feature caches of an imported Flickr8k collection from bench/cache_flickr8k.py's cache.

Usage (from the repo root, after `manage.py import_dataset ../shared/data/flickr8k --format
flickr8k --collection flickr8k` and bench/cache_flickr8k.py):

    LOUPE_VAR_DIR=... .venv/bin/python bench/seed_flickr8k_features.py [--cache var/cache/flickr8k] \
        [--collection flickr8k]

Why: on the shared 2-core machine, re-running EfficientNet-Lite0 over 7,000 stored images
through `embeddings.encoding.features_for` ran at ~0.4 images/s under load (hours). This copies
the already computed features of the SAME encoder identity into the per-image cache
(key = image id) and the MiniLM sentence vectors into training's text cache (key = sha256 of
the caption text), so `manage.py train` then runs from cache.

Caveat, stated in the model card: the bench cache was computed from the original JPEG files,
while Loupe stores a server-side re-encode (JPEG quality 92), so image features differ from
what `features_for` would compute by JPEG re-encoding noise. Caption vectors are exact
(the stored caption text differs at most in white space, which MiniLM's tokenizer ignores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "flickr8k")
    p.add_argument("--collection", default="flickr8k")
    args = p.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.conf import settings

    from embeddings.ml.feature_cache import FeatureCache
    from embeddings.models import Caption, Image
    from embeddings.runtime import FEATURE_FIELDS

    manifest = json.loads((args.cache / "manifest.json").read_text())
    img_ident, txt_ident = manifest["image_encoder_identity"], manifest["text_encoder_identity"]
    src_img = FeatureCache(args.cache / "image" / "orig", encoder_identity=img_ident)

    images = dict(Image.objects.filter(collection__name=args.collection).values_list("source_name", "pk"))
    dst_img = FeatureCache(Path(settings.FEATURE_DIR) / hashlib.sha256(img_ident.encode()).hexdigest()[:16],
                           encoder_identity=img_ident, fields=FEATURE_FIELDS)
    todo = [(name, pk) for name, pk in images.items() if str(pk) not in dst_img and name in src_img]
    for start in range(0, len(todo), 500):
        part = todo[start:start + 500]
        feats = src_img.get([n for n, _ in part], fields=list(FEATURE_FIELDS))
        dst_img.add([str(pk) for _, pk in part], feats)
    print(f"image features: {len(todo)} seeded, {len(images) - len(todo)} already present or not in the cache")

    if not (args.cache / "text" / "sentence").is_dir():  # cache built with --skip-text: the captioner needs none
        print("caption vectors: none seeded (no text/sentence in the bench cache; the embedding needs them)")
        return
    src_txt = FeatureCache(args.cache / "text" / "sentence", encoder_identity=txt_ident)
    dst_txt = FeatureCache(Path(settings.FEATURE_DIR) / f"text-{hashlib.sha256(txt_ident.encode()).hexdigest()[:16]}",
                           encoder_identity=txt_ident, fields={"vector": (384,)})
    key_of = {(f, " ".join(text.split())): key for f, caps in manifest["captions"].items() for key, text in caps}
    pairs, seen = [], set()
    for name, text in Caption.objects.filter(image__collection__name=args.collection).values_list(
            "image__source_name", "text"):
        key = key_of.get((name, " ".join(text.split())))
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        if key is not None and key in src_txt and digest not in dst_txt and digest not in seen:
            pairs.append((digest, key))
            seen.add(digest)
    for start in range(0, len(pairs), 5000):
        part = pairs[start:start + 5000]
        vecs = src_txt.get([k for _, k in part], dtype=np.float32)["sentence"]
        dst_txt.add([d for d, _ in part], {"vector": vecs})
    print(f"caption vectors: {len(pairs)} seeded")


if __name__ == "__main__":
    main()
