"""Shared set-up of bench/ingest.py and bench/upload_searchable.py: a throwaway database, the
product's own processes (the Celery workers `make run` starts), Flickr8k import items, CPU time.

Nothing here is product logic: the benchmarks call the product's services (import, processing,
index flush) and only start processes, count and time.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from bench.celery_workers import SoloWorkers

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "flickr8k"
TICKS = os.sysconf("SC_CLK_TCK")


def setup_env(var_dir: Path, db_name: str, broker: str, **extra: str) -> None:
    """Point this process (and the processes it starts) at the bench database, broker and folders."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db_name}",
        "CELERY_BROKER_URL": broker,
        "LOUPE_VAR_DIR": str(var_dir),
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # every arm and process pinned alike
        "LOUPE_WORKER_THREADS": "1", "LOUPE_COMMAND_THREADS": "1", "LOUPE_WEB_THREADS": "1",
        **extra,
    })


def recreate_database(db_name: str, broker: str) -> None:
    import psycopg
    import redis

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {db_name}")
    redis.Redis.from_url(broker).flushdb()


def django_ready(*, captioner: bool) -> None:
    """django.setup(), migrate, the shipped models registered (as `make run`'s loupe_setup does);
    without `captioner` the shipped captioner is retired, so processing is encoding only."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from embeddings.models import ModelVersion
    from embeddings.services import conse_version_ensure
    from training.shipped import shipped_models_register

    conse_version_ensure()
    for line in shipped_models_register():
        print(line, flush=True)
    if not captioner:
        ModelVersion.objects.filter(kind=ModelVersion.Kind.CAPTIONER).update(status=ModelVersion.Status.RETIRED)


def flickr_names(split: str, n: int) -> list[str]:
    files = {"dev": "Flickr_8k.devImages.txt", "train": "Flickr_8k.trainImages.txt"}
    return (DATA / files[split]).read_text().split()[:n]


def captions_by_name() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DATA / "Flickr8k.token.txt").read_text().splitlines():
        key, _, text = line.partition("\t")
        out.setdefault(key.split("#")[0], []).append(text.strip())
    return out


def import_items(names: list[str], captions: dict[str, list[str]] | None = None) -> list:
    from embeddings.ingest.readers import ImportItem

    return [ImportItem(path=DATA / "images" / n, name=n, captions=list((captions or {}).get(n, [])))
            for n in names]


def raw_encode(paths: list[Path], batch: int, encoder_name: str = "efficientnet-lite0") -> tuple[float, float]:
    """(seconds, CPU seconds) of the bare encoder loop over the files: read, decode
    (`transforms.load_rgb`), preprocess at the encoder's size, `ImageEncoder.encode` per `batch`."""
    import torch

    from embeddings import runtime
    from embeddings.ml.transforms import load_rgb, preprocess

    encoder = runtime.image_encoder(encoder_name)
    c0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(paths), batch):
        encoder.encode(torch.stack([preprocess(load_rgb(p), size=encoder.image_size)
                                    for p in paths[start:start + batch]]))
    return time.perf_counter() - t0, time.process_time() - c0


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and its waited-for children (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICKS  # utime, stime, cutime, cstime


class Workers(SoloWorkers):
    """The two Celery workers of `make run` (deploy/run.sh): `short` on the default queue (uploads,
    index flushes), `long` on gpu,bulk (imports); solo pool, one torch thread each."""

    QUEUES = (("short", "default"), ("long", "gpu,bulk"))

    def __init__(self, log_dir: Path) -> None:
        super().__init__(self.QUEUES, log_dir)

    def cpu_seconds(self) -> list[float]:
        """CPU seconds so far of each worker, in QUEUES order (short, long)."""
        return [proc_cpu_seconds(p.pid) for p in self.procs]



def wait_indexed(image_ids: list[int], version_id: int, timeout: float = 3600) -> None:
    """Until every image is processed (ready or failed) and none waits for the index flush."""
    from embeddings.models import Image
    from search.models import PendingIndexItem

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ = Image.objects.filter(pk__in=image_ids).exclude(
            status__in=[Image.Status.READY, Image.Status.FAILED]).exists()
        if not open_ and not PendingIndexItem.objects.filter(model_version_id=version_id,
                                                             item_id__in=image_ids).exists():
            return
        time.sleep(0.1)
    raise RuntimeError(f"images not indexed within {timeout} s")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
