"""Feature caching for training (issue 20: "report feature caching separately, with its rate
against the raw encoder"): the product's `collection_features_compute` (what `manage.py
compute_features` and training's feature preparation run) against the raw encoder loop, on the
same Flickr8k photos, side by side.

Usage (from the repo root; PostgreSQL on 127.0.0.1):

    .venv/bin/python bench/feature_caching.py [--images 1000] [--rounds 3] [--encoders efficientnet-lite0]

In its own database (loupe_bench_features, dropped first) and a temporary LOUPE_VAR_DIR; the
photos are read from ../shared/data/flickr8k/images (never copied) and imported once, without
their captions (caption vectors are text encoding, reported elsewhere); the original files are
read once before timing, as the import has just written the stored ones. Arms, interleaved (the
order alternates per round), in this one process at 1 torch/OMP thread:

- raw: read, decode (`transforms.load_rgb`), preprocess, `ImageEncoder.encode` on forwards of
  LOUPE_ENCODE_BATCH, over the original files;
- product: `collection_features_compute(captions=False)` on an empty feature cache (it is
  deleted before each product round): the stored files read through the product's loader,
  forwards of LOUPE_ENCODE_BATCH, one checked float16 cache shard per 256 images.

Ratio: product images/s / raw images/s of the same round; the median over rounds is reported.
Writes bench/results/feature_caching.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import ingest_common as common  # noqa: E402

DB_NAME = "loupe_bench_features"
RESULTS = REPO / "bench" / "results" / "feature_caching.md"


def product_arm(collection, encoder_name: str, var_dir: Path) -> tuple[float, int]:
    from embeddings.services.features import collection_features_compute

    shutil.rmtree(var_dir / "features", ignore_errors=True)  # every image new to the cache
    t0 = time.perf_counter()
    summary = collection_features_compute(collection=collection, captions=False, encoder=encoder_name)
    return time.perf_counter() - t0, summary.images_encoded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--encoders", default="efficientnet-lite0")
    args = p.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="loupe-bench-features-"))
    common.setup_env(var_dir, DB_NAME, "redis://127.0.0.1:6379/12")
    common.recreate_database(DB_NAME, "redis://127.0.0.1:6379/12")
    import django

    django.setup()
    import torch
    from django.core.management import call_command

    from embeddings import runtime
    from embeddings.models import Collection
    from embeddings.services.importing import dataset_import

    torch.set_num_threads(1)
    call_command("migrate", verbosity=0)
    names = common.flickr_names("dev", args.images)
    collection = Collection.objects.create(name="features", is_public=True)
    summary = dataset_import(items=common.import_items(names), collection=collection, enqueue=False)
    if summary.imported != len(names):
        raise RuntimeError(f"import of {len(names)} made {summary.as_dict()}")
    paths = [common.DATA / "images" / n for n in names]
    for path in paths:  # both arms start with their files in the page cache (the import just wrote the stored ones)
        path.read_bytes()
    command = (f".venv/bin/python bench/feature_caching.py --images {args.images} --rounds {args.rounds} "
               f"--encoders {args.encoders}")
    rows, summary_rows = [], []
    for encoder_name in args.encoders.split(","):
        warm = runtime.image_encoder(encoder_name)  # loaded, and its forward shapes seen, before timing
        for _ in range(3):
            warm.encode(torch.zeros(runtime.encode_batch_size(), 3, warm.image_size, warm.image_size))
        ratios = []
        for r in range(args.rounds):
            order = ("raw", "product") if r % 2 == 0 else ("product", "raw")
            took: dict[str, float] = {}
            for arm in order:
                if arm == "raw":
                    took["raw"] = common.raw_encode(paths, runtime.encode_batch_size(), encoder_name)[0]
                else:
                    took["product"], encoded = product_arm(collection, encoder_name, var_dir)
                    if encoded != len(names):
                        raise RuntimeError(f"product arm encoded {encoded} of {len(names)}")
            ratio = took["raw"] / took["product"]
            ratios.append(ratio)
            rows.append(f"| {encoder_name} | {r + 1} | {' then '.join(order)} | {took['raw']:.1f} | "
                        f"{len(names) / took['raw']:.2f} | {took['product']:.1f} | "
                        f"{len(names) / took['product']:.2f} | {ratio:.3f} | {common.load_average()} |")
            print(rows[-1], flush=True)
        summary_rows.append(f"| feature caching, {encoder_name}: product images/s / raw encoder images/s, same "
                            f"{len(names)} images, same run | {statistics.median(ratios):.3f} (rounds: "
                            f"{', '.join(f'{x:.3f}' for x in ratios)}) | report, with the raw encoder's rate | "
                            f"reported | {date.today().isoformat()} | `{command}` |")
    lines = ["## Feature caching for training vs the raw encoder", "", "<!-- summary -->",
             "| figure | measured | goal | met? | date | command |", "| --- | --- | --- | --- | --- | --- |",
             *summary_rows, "<!-- /summary -->", "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work), no GPU; "
             f"torch {torch.__version__}; one torch/OMP thread; {len(names)} Flickr8k dev photos, forwards of "
             f"{runtime.encode_batch_size()}. Product: `collection_features_compute(captions=False)` on an empty "
             "cache (stored files through the product's loader, checked float16 shards of 256). Raw: read, "
             "decode, preprocess and `ImageEncoder.encode` over the original files.", "",
             "| encoder | round | order | raw s | raw img/s | product s | product img/s | ratio | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
