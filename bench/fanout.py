"""Embedding fan-out: re-encoding a collection on promotion with 1 vs 2 Celery worker processes.

Usage (from the repo root; PostgreSQL and Redis on 127.0.0.1, as in production):

    .venv/bin/python bench/fanout.py [--images 1000] [--rounds 2] [--chunk 50]

What it does, all in its own database (loupe_bench_fanout, dropped first) and Redis db 13:

1. imports the first --images Flickr8k dev photos with their 5 captions each (a CSV in a temp
   folder pointing at ../shared/data/flickr8k/images; nothing is copied), and lets two workers
   process the uploads (EfficientNet-Lite0 features cached per image, ConSE v0 vectors);
2. per round and arm, registers a fresh candidate embedding version (ConSE with another k, so
   it has no vectors yet), starts the arm's workers (`-Q gpu --pool=solo`), waits until they are
   ready, then times `model_version_promote` from the call to the atomic flip: every chunk of
   --chunk images encoded by whichever worker takes it (features from the cache -> ConSE image
   vectors; MiniLM over every caption), both indexes built, statuses switched;
3. arms: "1 worker x 1 thread", "2 workers x 1 thread" (the scale-out case: one more process,
   as on another host) and "1 worker x 2 threads" (the same 2 cores used by one process).
   The order of the arms rotates between rounds. Reports medians and the 2-worker speed-up.

The machine has 2 cores, so 2 workers can at best double the rate; anything else on the
machine (load average is printed) takes from that.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.celery_workers import SoloWorkers  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "flickr8k"
DB_NAME = "loupe_bench_fanout"
BROKER = "redis://127.0.0.1:6379/13"
ARMS = [("1 worker x 1 thread", 1, 1), ("2 workers x 1 thread", 2, 1), ("1 worker x 2 threads", 1, 2)]


def setup_env(var_dir: Path, chunk: int) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        "CELERY_BROKER_URL": BROKER,
        "LOUPE_VAR_DIR": str(var_dir),
        "LOUPE_PROMOTION_CHUNK": str(chunk),
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
    })


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    import redis

    redis.Redis.from_url(BROKER).flushdb()


def write_csv(folder: Path, n: int) -> Path:
    dev = (DATA / "Flickr_8k.devImages.txt").read_text().split()[:n]
    wanted = set(dev)
    rows = []
    for line in (DATA / "Flickr8k.token.txt").read_text().splitlines():
        key, _, text = line.partition("\t")
        name = key.split("#")[0]
        if name in wanted:
            rows.append((name, text.strip()))
    path = folder / "subset.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "caption"), *rows])
    return path


class Workers(SoloWorkers):
    """N worker processes with T torch threads each; stopped with SIGTERM (warm shutdown)."""

    def __init__(self, n: int, threads: int, queues: str, log_dir: Path, tag: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        super().__init__([(f"{tag}-{i}", queues) for i in range(n)], log_dir, env)


def wait_processed(total: int, timeout: float = 3600) -> float:
    from embeddings.models import Image

    t0 = time.perf_counter()
    while True:
        pending = Image.objects.exclude(status__in=[Image.Status.READY, Image.Status.FAILED]).count()
        if pending == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{pending} of {total} images still not processed")
        time.sleep(1)


def candidate(k: int):
    from embeddings.ml.conse import DEFAULT_PROMPTS, DEFAULT_TEMPERATURE
    from embeddings.models import ModelVersion

    return ModelVersion.objects.create(
        kind=ModelVersion.Kind.EMBEDDING, name=f"conse-k{k}", family="conse", dim=384,
        status=ModelVersion.Status.CANDIDATE,
        config={"k": k, "temperature": DEFAULT_TEMPERATURE, "prompts": list(DEFAULT_PROMPTS)},
        encoders={"image": "efficientnet-lite0 (ImageNet)", "text": "all-MiniLM-L6-v2"})


def promote_timed(version) -> tuple[float, dict]:
    from training.services.promotion import model_version_promote

    t0 = time.perf_counter()
    switch = model_version_promote(version=version, force=True)
    encoded_at = None
    while True:
        switch.refresh_from_db()
        if encoded_at is None and switch.status not in ("queued", "encoding"):
            encoded_at = time.perf_counter()  # every chunk done; index build and flip follow
        if switch.status in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if switch.status != "succeeded":
        raise RuntimeError(f"switch {switch.pk} failed: {switch.error}")
    return wall, {"images": switch.total, "chunks": switch.chunks_total, "encode_s": (encoded_at or t0) - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "fanout.md")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loupe-fanout-"))
    setup_env(work / "var", args.chunk)
    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command

    from embeddings.models import Caption, Image

    call_command("migrate", "--no-input", verbosity=0)
    csv_path = write_csv(work, args.images)
    load_before = os.getloadavg()
    ingest = Workers(2, 1, "default,gpu,bulk", work, "ingest")
    try:
        t0 = time.perf_counter()
        call_command("import_dataset", str(csv_path), "--format", "csv", "--collection", "fanout",
                     "--images", str(DATA / "images"), "--public", "--no-progress")
        processed_s = wait_processed(args.images) + (time.perf_counter() - t0)
    finally:
        ingest.stop()
    n_images, n_captions = Image.objects.count(), Caption.objects.count()
    print(f"imported and processed {n_images} images / {n_captions} captions in {processed_s:.0f} s", flush=True)

    results: dict[str, list[float]] = {name: [] for name, _, _ in ARMS}
    encode_rates: dict[str, list[float]] = {name: [] for name, _, _ in ARMS}
    log_lines = []
    k = 6
    for r in range(args.rounds):
        order = ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]
        for name, n, threads in order:
            version = candidate(k)
            k += 1
            workers = Workers(n, threads, "gpu", work, f"r{r}-{n}x{threads}")
            try:
                wall, info = promote_timed(version)
            finally:
                workers.stop()
            rate = info["images"] / wall
            results[name].append(rate)
            encode_rates[name].append(info["images"] / max(info["encode_s"], 1e-9))
            line = (f"round {r + 1}, {name}: {wall:.1f} s to the flip, {rate:.1f} images/s ({info['chunks']} chunks); "
                    f"encoding phase {info['encode_s']:.1f} s; load {os.getloadavg()[0]:.1f}")
            log_lines.append(line)
            print(line, flush=True)
    med = {name: statistics.median(v) for name, v in results.items()}
    enc = {name: statistics.median(v) for name, v in encode_rates.items()}
    speedup = med["2 workers x 1 thread"] / med["1 worker x 1 thread"]
    enc_speedup = enc["2 workers x 1 thread"] / enc["1 worker x 1 thread"]
    vs_threads = med["2 workers x 1 thread"] / med["1 worker x 2 threads"]
    load_after = os.getloadavg()
    import torch

    body = [
        "## Embedding fan-out: promotion re-encoding with 1 and 2 worker processes",
        "",
        f"Command: `.venv/bin/python bench/fanout.py --images {args.images} --rounds {args.rounds} "
        f"--chunk {args.chunk}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), no GPU; "
        f"torch {torch.__version__}; "
        f"PostgreSQL + Redis; load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f}.",
        "",
        f"Data: {n_images} Flickr8k dev images, {n_captions} captions (upload processing by 2 workers took "
        f"{processed_s:.0f} s, not part of the comparison). Each promotion re-encodes every image and caption "
        f"for a new ConSE candidate (image vectors from the cached EfficientNet logits, MiniLM over every caption), "
        f"in chunks of {args.chunk} images taken by whichever worker is free, then builds both indexes and flips. "
        "Timed from the service call to the flip; workers started and ready before the clock starts "
        "(each loads MiniLM lazily on its first chunk, inside the timing).",
        "",
        "| arm | images/s to the flip, per round | median | encoding phase only: median images/s |",
        "| --- | --- | --- | --- |",
        *[f"| {name} | {', '.join(f'{v:.1f}' for v in results[name])} | {med[name]:.1f} | {enc[name]:.1f} |"
          for name, _, _ in ARMS],
        "",
        f"**2 workers / 1 worker (1 thread each): {speedup:.2f}x to the flip, {enc_speedup:.2f}x in the encoding "
        "phase** (ideal on 2 free cores: 2x; the index build and flip after the last chunk run once). "
        f"2 single-thread workers / 1 two-thread worker: {vs_threads:.2f}x.",
        "",
        "Per round:",
        "",
        *[f"- {line}" for line in log_lines],
        "",
    ]
    args.results.write_text("\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
