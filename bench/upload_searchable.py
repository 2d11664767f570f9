"""Upload -> searchable while a bulk import is being encoded, and bulk images' encode -> index delay.

Usage (from the repo root; PostgreSQL and Redis on 127.0.0.1):

    .venv/bin/python bench/upload_searchable.py [--bulk 3000] [--uploads 20]

All in its own database (loupe_bench_upload, dropped first), Redis db 11 and a temporary
LOUPE_VAR_DIR; photos are read from ../shared/data/flickr8k/images, never copied.

1. Set-up as `make run`: migrate, the shipped models (embedding model AND captioner active), then
   deploy/run.sh itself (gunicorn, the short and long Celery workers, beat) in its own process
   group, waited on until /readyz answers 200 or fails only for want of an image index (the
   database starts empty; `make run` would import the demo collection first). Every process 1
   torch/OMP thread.
2. `manage.py import_dataset` of --bulk Flickr8k train photos with their 5 captions each (a CSV
   in the temporary folder), in a subprocess: chunks go to the bulk queue, the long worker
   encodes and captions them.
3. Once the first bulk vectors exist, --uploads Flickr8k dev photos are uploaded through the
   REST API one at a time (POST /api/v1/images/, token auth). Each is timed from the start of
   its POST until a search (POST /api/v1/search/ with the image itself as the query term) returns
   it, polled every 0.1 s once its vector is stored.
4. Meanwhile every 0.5 s a poller records, per bulk image, when its vector is first seen stored
   and when it is first seen stored with no index flush pending: the join delay (resolution
   0.5 s). Reported for every bulk image encoded until the uploads end (waiting up to 120 s
   more for those to join); the bulk images encoded by then are counted, to show encoding was
   still going on through the uploads.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import ingest_common as common  # noqa: E402

DB_NAME = "loupe_bench_upload"
BROKER = "redis://127.0.0.1:6379/11"
PORT = 8779
BASE = f"http://127.0.0.1:{PORT}"
RESULTS = REPO / "bench" / "results" / "upload_searchable.md"


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (of 20 values: the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def start_product(var: Path) -> subprocess.Popen:
    log = (var / "run.log").open("wb")
    proc = subprocess.Popen(["bash", "deploy/run.sh"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PY": sys.executable, "HOST": "127.0.0.1", "PORT": str(PORT)},
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if _ready(requests.get(f"{BASE}/readyz", timeout=5)):
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(1)
    stop_product(proc)
    raise RuntimeError(f"the product did not become ready:\n{(var / 'run.log').read_text(errors='replace')[-3000:]}")


def _ready(resp: requests.Response) -> bool:
    """/readyz 200, or 503 only because no image index exists yet (an empty install: the first
    flush builds it) once the web processes are warm."""
    if resp.status_code == 200:
        return True
    body = resp.json()
    failing = {k for k, v in body.get("checks", {}).items() if v != "ok"}
    return failing == {"index"} and body.get("warm_up", {}).get("status") == "ready"


def stop_product(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


class BulkPoller(threading.Thread):
    """When each bulk image's vector is first seen, and first seen with no flush pending."""

    def __init__(self, collection_name: str, version_id: int) -> None:
        super().__init__(daemon=True)
        self.collection_name, self.version_id = collection_name, version_id
        self.encoded: dict[int, float] = {}
        self.indexed: dict[int, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from embeddings.models import ImageEmbedding
        from search.models import PendingIndexItem

        try:
            while not self.stop_flag.is_set():
                now = time.perf_counter()
                have = set(ImageEmbedding.objects.filter(model_version_id=self.version_id,
                                                         image__collection__name=self.collection_name)
                           .values_list("image_id", flat=True))
                waiting = set(PendingIndexItem.objects.filter(model_version_id=self.version_id, modality="image")
                              .values_list("item_id", flat=True))
                for i in have - self.encoded.keys():
                    self.encoded[i] = now
                for i in have - waiting - self.indexed.keys():
                    self.indexed[i] = now
                self.stop_flag.wait(0.5)
        finally:
            connection.close()


def upload_one(path: Path, token: str, version_id: int, timeout: float = 120.0) -> tuple[float, int]:
    from embeddings.models import ImageEmbedding

    headers = {"Authorization": f"Token {token}"}
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        resp = requests.post(f"{BASE}/api/v1/images/", headers=headers, files={"file": (path.name, fh)},
                             data={"collection": "uploads"}, timeout=60)
    resp.raise_for_status()
    image_id = resp.json()["id"]
    while time.perf_counter() - t0 < timeout:
        if ImageEmbedding.objects.filter(model_version_id=version_id, image_id=image_id).exists():
            found = requests.post(f"{BASE}/api/v1/search/", headers=headers, timeout=30,
                                  json={"image_id": image_id, "collection": ["uploads"]})
            if found.ok and any(hit["image_id"] == image_id for hit in found.json()["results"]):
                return time.perf_counter() - t0, image_id
        time.sleep(0.1)
    raise RuntimeError(f"upload {image_id} not searchable within {timeout} s")


def write_csv(folder: Path, names: list[str]) -> Path:
    captions = common.captions_by_name()
    path = folder / "bulk.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "caption"), *[(n, c) for n in names for c in captions.get(n, [])]])
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bulk", type=int, default=3000)
    p.add_argument("--uploads", type=int, default=20)
    p.add_argument("--gap", type=float, default=0.0,
                   help="seconds between one upload becoming searchable and the next upload (spreads them "
                        "over more of the import)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    var = Path(tempfile.mkdtemp(prefix="loupe-bench-upload-"))
    common.setup_env(var, DB_NAME, BROKER)
    common.recreate_database(DB_NAME, BROKER)
    common.django_ready(captioner=True)
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from embeddings import runtime
    from embeddings.models import Collection, Image, ModelVersion

    version = runtime.active_version(ModelVersion.Kind.EMBEDDING)
    user = get_user_model().objects.create_user(username="uploader", password="bench-only-pw")
    Collection.objects.create(name="uploads", owner=user)
    token = Token.objects.create(user=user).key
    bulk_csv = write_csv(var, common.flickr_names("train", args.bulk))
    uploads = [common.DATA / "images" / n for n in common.flickr_names("dev", args.uploads)]
    product = start_product(var)
    poller = BulkPoller("bulk", version.pk)
    importer = None
    try:
        t_import = time.perf_counter()
        importer = subprocess.Popen(
            [sys.executable, "manage.py", "import_dataset", str(bulk_csv), "--format", "csv", "--collection", "bulk",
             "--images", str(common.DATA / "images"), "--public", "--no-progress"],
            cwd=REPO, env=dict(os.environ), stdout=(var / "import.log").open("wb"), stderr=subprocess.STDOUT)
        poller.start()
        while not poller.encoded:
            if time.perf_counter() - t_import > 600:
                raise RuntimeError("no bulk image encoded within 600 s")
            time.sleep(0.5)
        at_start = len(poller.encoded)
        t_up0 = time.perf_counter()
        timings = []
        for path in uploads:
            seconds, image_id = upload_one(path, token, version.pk)
            timings.append(seconds)
            print(f"upload {image_id}: searchable after {seconds:.2f} s (bulk encoded so far: "
                  f"{len(poller.encoded)})", flush=True)
            time.sleep(args.gap)
        t_up1 = time.perf_counter()
        at_end = len(poller.encoded)
        encoded_by_end = [i for i, t in poller.encoded.items() if t <= t_up1]
        deadline = time.monotonic() + 120
        while any(i not in poller.indexed for i in encoded_by_end) and time.monotonic() < deadline:
            time.sleep(0.5)
        imported = Image.objects.filter(collection__name="bulk").count()
    finally:
        poller.stop_flag.set()
        if importer is not None and importer.poll() is None:
            importer.terminate()
            importer.wait(60)
        stop_product(product)
    joins = [poller.indexed[i] - poller.encoded[i] for i in encoded_by_end if i in poller.indexed]
    never = len(encoded_by_end) - len(joins)
    write_results(args, timings, joins, never, at_start, at_end, imported, t_up1 - t_up0, t_up0 - t_import)


def write_results(args, timings, joins, never, at_start, at_end, imported, window, lead) -> None:
    import torch

    cmd = ".venv/bin/python bench/upload_searchable.py " + " ".join(sys.argv[1:])
    today = date.today().isoformat()
    up95, join95 = p95(timings), (p95(joins) if joins else float("nan"))
    join_max = max(joins) if joins else float("nan")
    lines = [
        "## Upload -> searchable during a bulk import", "",
        "<!-- summary -->",
        "| figure | measured | goal | met? | date | command |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| upload -> searchable p95, {len(timings)} API uploads during a bulk import | {up95:.2f} s | <= 10 s | "
        f"{'met' if up95 <= 10 else f'**missed** by {up95 - 10:.2f} s'} | {today} | `{cmd}` |",
        f"| bulk images: vector stored -> in the index, p95 of {len(joins)} | {join95:.1f} s | <= 60 s | "
        f"{'met' if joins and join95 <= 60 and not never else '**missed**'} | {today} | `{cmd}` |",
        "<!-- /summary -->", "",
        f"Command: `{cmd}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work), no GPU; torch "
        f"{torch.__version__}; the processes of `make run` (deploy/run.sh: gunicorn, short and long Celery "
        "workers, beat), every process 1 torch/OMP thread, embedding model and captioner active.", "",
        f"Bulk import: `manage.py import_dataset` of {args.bulk} Flickr8k train photos with 5 captions each "
        f"({imported} imported by the end). Uploads began {lead:.0f} s after the import started, once bulk "
        f"vectors existed ({at_start} bulk images encoded), one at a time with {args.gap:g} s between one "
        f"becoming searchable and the next POST, and took {window:.0f} s; {at_end} bulk images were "
        f"encoded when they ended, "
        + ("so bulk encoding went on through all of them." if at_end < imported else
           "so bulk encoding had ENDED before the last uploads (see the per-upload log)."), "",
        f"Upload -> searchable (POST of the file until a search with the image as the query returns it): "
        f"median {statistics.median(timings):.2f} s, p95 {up95:.2f} s, max {max(timings):.2f} s; each: "
        + ", ".join(f"{t:.2f}" for t in timings) + ".", "",
        f"Bulk images encoded before the uploads ended: {len(joins) + never}; vector stored -> no index flush "
        f"pending (polled every 0.5 s): median {statistics.median(joins) if joins else float('nan'):.1f} s, "
        f"p95 {join95:.1f} s, max {join_max:.1f} s; not in the index 120 s after the uploads: {never}.", ""]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
