"""Re-encoding every image on promotion (chunked Celery tasks) vs the raw encoding loop.

Usage (from the repo root, with the Flickr8k collection imported, its features cached and a
trained candidate embedding version ID that has no vectors yet):

    LOUPE_VAR_DIR=var/f8k/var .venv/bin/python bench/promotion_reencode.py --version ID [ID ...] \
        [--results bench/results/promotion.md]

Several IDs make several rounds: each round promotes the next candidate, then times the raw
loop for that version, so the two sides of a round see the same machine load; the report
gives each round and the median ratio.

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
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.retrain_overhead import start_worker  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", type=int, nargs="+", required=True,
                   help="candidate version ids without vectors; one round per id, promoted in this order")
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
    ids = list(Image.objects.exclude(status=Image.Status.FAILED).order_by("pk").values_list("pk", flat=True))
    texts = list(Caption.objects.filter(image_id__in=ids).values_list("text", flat=True))
    size = chunk_size()
    log = Path(os.environ.get("LOUPE_VAR_DIR", REPO / "var")) / "bench-promotion-worker.log"
    rows = []
    for version_id in args.version:
        version = ModelVersion.objects.get(pk=version_id)
        worker = start_worker(log)  # a fresh worker per round: it loads the models lazily, inside the timing
        try:
            t0 = time.perf_counter()
            switch = model_version_promote(version=version, force=True)
            while ModelSwitch.objects.get(pk=switch.pk).status not in ("succeeded", "failed"):
                time.sleep(0.5)
            promo_s = time.perf_counter() - t0
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        switch.refresh_from_db()
        if switch.status != "succeeded":
            raise SystemExit(f"promotion of v{version_id} failed: {switch.error}")
        embedder = runtime.embedder_for(version)
        embedder.encode_texts(["warm up"])  # model loading is outside the raw timing (inside the worker's)
        features_for(ids[:1])
        t0 = time.perf_counter()
        for i in range(0, len(ids), size):
            embedder.encode_features(features_for(ids[i:i + size]))
        for i in range(0, len(texts), 256):
            embedder.encode_texts(texts[i:i + 256])
        raw_s = time.perf_counter() - t0
        rows.append((version_id, promo_s, raw_s))
        print(f"v{version_id}: promotion {promo_s:.1f} s, raw {raw_s:.1f} s, ratio {raw_s / promo_s:.3f}", flush=True)
    ratios = [raw_s / promo_s for _, promo_s, raw_s in rows]  # = (images/promo_s) / (images/raw_s)
    cmd = "LOUPE_VAR_DIR=... .venv/bin/python bench/promotion_reencode.py " + " ".join(sys.argv[1:])
    n = len(ids)
    text = "\n".join([
        "## Re-encoding on promotion vs the raw encoding loop", "",
        f"Command: `{cmd}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU; torch {torch.__version__}.", "",
        f"{n} images, {len(texts)} captions, chunk {size} images, one worker (solo pool), "
        f"{len(rows)} round(s), each promotion followed by the raw loop of the same version.", "",
        "| round (version) | promotion (tasks, DB upserts, 2 indexes, flip) | images/s | raw loop (features -> heads, "
        "MiniLM -> heads) | images/s | ratio |", "| --- | --- | --- | --- | --- | --- |",
        *[f"| {i + 1} (v{v}) | {p:.1f} s | {n / p:.1f} | {r:.1f} s | {n / r:.1f} | {r / p:.3f} |"
          for i, (v, p, r) in enumerate(rows)], "",
        f"Median ratio {statistics.median(ratios):.3f} (goal >= 0.9) over {len(rows)} round(s).", ""])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
