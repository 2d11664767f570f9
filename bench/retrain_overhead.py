"""Retraining from the admin vs a bare training loop: wall time and throughput ratio.

Usage (from the repo root, with a Flickr8k collection imported and its features cached; see
models/MODEL_CARD.md for the commands):

    LOUPE_VAR_DIR=var/f8k/var .venv/bin/python bench/retrain_overhead.py [--collection flickr8k] \
        [--epochs 1] [--rounds 3] [--results bench/results/retraining.md]

Per round, side by side on the same data and config:
- "job": a run started by the same service the admin's Retrain button calls
  (training_run_start), executed by a REAL Celery worker process (solo pool, gpu queue, the
  embedded file-system broker), timed from the start call to status "succeeded"; its
  training samples/s is the median over epochs of each epoch's median step throughput, as the
  worker recorded it in the run's history (`--mode inprocess`: the same job in this process);
- "bare": the same TrainTask (same frozen dataset, same config) through training.ml.trainer.train
  in this process, no database, no heartbeat, no checkpoints.
Ratio = job samples/s / bare samples/s (goal >= 0.95); wall time goal <= 5 min.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", default="flickr8k")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--patience", type=int, default=0, help="early-stop patience (0 = run every epoch)")
    p.add_argument("--defaults", action="store_true",
                   help="train the Retrain form's defaults unchanged (what the admin button runs); "
                        "--epochs / --patience are then ignored")
    p.add_argument("--mode", choices=["worker", "inprocess"], default="worker",
                   help="worker: a real Celery worker runs the job; inprocess: training_run_execute here")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "retraining.md")
    return p.parse_args()


def start_worker(log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "gpu", "--pool=solo",
                             "--loglevel=INFO", "-n", f"bench-{os.getpid()}@%h"], cwd=REPO,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc


def job_round(collection, overrides: dict, mode: str) -> tuple[float, float, int]:
    from training import services
    from training.models import TrainingRun

    t0 = time.perf_counter()
    run = services.training_run_start(kind="embedding", collections=[collection], config_overrides=overrides,
                                      user=None, enqueue=mode == "worker")
    if mode == "inprocess":
        services.training_run_execute(run.pk)
    while True:
        run.refresh_from_db()
        if run.status not in TrainingRun.ACTIVE_STATUSES:
            break
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    if run.status != "succeeded":
        raise RuntimeError(f"run {run.pk} {run.status}: {run.error}")
    rates = [h["samples_per_s"] for h in run.history if h.get("samples_per_s")]
    return wall, statistics.median(rates), run.pk


def bare_round(run_id: int, overrides: dict) -> float:
    from training.encoders import get_encoders
    from training.ml.trainer import train
    from training.services import fitting
    from training.services.configs import train_config_build
    from training import datasets

    config = train_config_build(kind="embedding", overrides=overrides)
    splits = datasets.snapshot([], fitting.run_dir(run_id))
    task = fitting.build_task(config, splits, get_encoders())
    rates: list[float] = []
    train(config.loop, task, device="cpu",
          on_event=lambda name, p: rates.append(p["samples_per_s"]) if name == "step" else None)
    return statistics.median(rates)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    import torch

    from embeddings.models import Collection

    torch.set_num_threads(2)
    collection = Collection.objects.get(name=args.collection)
    overrides = {} if args.defaults else {"loop": {"epochs": args.epochs, "patience": args.patience}}
    if args.defaults:
        from training.services.configs import default_config
        loop = default_config("embedding").loop
        args.epochs, args.patience = loop.epochs, loop.patience
    log = Path(os.environ.get("LOUPE_VAR_DIR", REPO / "var")) / "bench-worker.log"
    worker = start_worker(log) if args.mode == "worker" else None
    rows = []
    try:
        for r in range(args.rounds):
            wall, job_rate, run_id = job_round(collection, overrides, args.mode)
            bare_rate = bare_round(run_id, overrides)
            rows.append((wall, job_rate, bare_rate))
            print(f"round {r + 1}: job {wall:.1f}s, {job_rate:.0f} samples/s; bare {bare_rate:.0f} samples/s; "
                  f"ratio {job_rate / bare_rate:.3f}", flush=True)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
    ratios = [j / b for _, j, b in rows]
    cmd = "LOUPE_VAR_DIR=... .venv/bin/python bench/retrain_overhead.py " + " ".join(sys.argv[1:])
    text = [
        f"## Retraining from the admin: wall time and job overhead ({args.mode})", "",
        f"Command: `{cmd}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, no GPU; "
        f"torch {torch.__version__}, 2 threads.", "",
        f"Data: collection {args.collection!r}, embedding heads, at most {args.epochs} epoch(s) per run "
        f"(patience {args.patience}), cached features"
        + (" (the Retrain form's defaults, unchanged)." if args.defaults else "."), "",
        "| round | job wall (start -> succeeded) | job samples/s | bare samples/s | ratio |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {i + 1} | {w:.1f} s | {j:.0f} | {b:.0f} | {j / b:.3f} |" for i, (w, j, b) in enumerate(rows)],
        "", f"Median ratio {statistics.median(ratios):.3f} (goal >= 0.95); median job wall "
        f"{statistics.median([w for w, _, _ in rows]):.1f} s for {args.epochs} epoch(s) "
        "(goal <= 5 min for a full run).", "",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as fh:
        fh.write("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
