"""Re-encoding every image on promotion (chunked Celery tasks) vs the raw encoding loop.

Usage (from the repo root, with the Flickr8k collection imported, its features cached and a
trained candidate embedding version ID that has no vectors yet):

    LOUPE_VAR_DIR=var/f8k/var .venv/bin/python bench/promotion_reencode.py --version ID \
        [--results bench/results/promotion.md]

"promotion": model_version_promote through a REAL Celery worker (solo pool, gpu queue), timed
from the service call to the atomic flip (all chunks encoded, indexes built, statuses switched);
"raw": the same work as one bare loop in this process, the same functions without tasks,
database writes or indexes: cached features -> image heads, caption texts -> MiniLM -> text
heads. Ratio = promotion images/s / raw images/s (goal >= 0.9).
Image features come from the per-image cache (computed at upload), so neither side runs
EfficientNet; both run MiniLM over every caption.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.retrain_overhead import start_worker  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "promotion.md")
    args = p.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    import torch

    from embeddings import runtime
    from embeddings.encoding import features_for
    from embeddings.models import Caption, Image, ModelVersion
    from training.models import ModelSwitch
    from training.services.promotion import chunk_size, model_version_promote

    torch.set_num_threads(2)
    version = ModelVersion.objects.get(pk=args.version)
    ids = list(Image.objects.exclude(status=Image.Status.FAILED).order_by("pk").values_list("pk", flat=True))
    texts = list(Caption.objects.filter(image_id__in=ids).values_list("text", flat=True))
    log = Path(os.environ.get("LOUPE_VAR_DIR", REPO / "var")) / "bench-promotion-worker.log"
    worker = start_worker(log)
    try:
        t0 = time.perf_counter()
        switch = model_version_promote(version=version)
        while ModelSwitch.objects.get(pk=switch.pk).status not in ("succeeded", "failed"):
            time.sleep(0.5)
        promo_s = time.perf_counter() - t0
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    switch.refresh_from_db()
    if switch.status != "succeeded":
        raise SystemExit(f"promotion failed: {switch.error}")
    embedder = runtime.embedder_for(version)
    embedder.encode_texts(["warm up"])  # model loading is outside the raw timing (inside the worker's)
    features_for(ids[:1])
    t0 = time.perf_counter()
    size = chunk_size()
    for i in range(0, len(ids), size):
        embedder.encode_features(features_for(ids[i:i + size]))
    for i in range(0, len(texts), 256):
        embedder.encode_texts(texts[i:i + 256])
    raw_s = time.perf_counter() - t0
    ratio = (len(ids) / promo_s) / (len(ids) / raw_s)
    cmd = "LOUPE_VAR_DIR=... .venv/bin/python bench/promotion_reencode.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        "## Re-encoding on promotion vs the raw encoding loop", "",
        f"Command: `{cmd}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU; torch {torch.__version__}.", "",
        f"{len(ids)} images, {len(texts)} captions, chunk {size} images, one worker (solo pool).", "",
        "| path | wall | images/s |", "| --- | --- | --- |",
        f"| promotion (tasks, DB upserts, 2 indexes, flip) | {promo_s:.1f} s | {len(ids) / promo_s:.1f} |",
        f"| raw loop (features -> heads, MiniLM -> heads) | {raw_s:.1f} s | {len(ids) / raw_s:.1f} |", "",
        f"Ratio {ratio:.3f} (goal >= 0.9). One run each (not a median).", ""])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
