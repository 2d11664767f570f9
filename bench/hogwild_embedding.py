"""Benchmark: Hogwild (+ Adagrad) vs the synchronous loop (AdamW) for the embedding heads, 2 cores.

Issue 17, item 3. The same generic loop (training.ml.trainer.train), the same data, model,
batch, epochs and seed; arms differ only in LoopConfig.optimizer / parallel / workers:

- sync-adamw-1t / sync-adamw-2t: one process, 1 or 2 torch threads (the default loop);
- sync-adagrad-1t: one process with Adagrad (separates the optimiser from the parallelism);
- hogwild-adagrad-2p: 2 Hogwild processes x 1 thread, Adagrad (the talk's Downpour pairing);
- hogwild-adamw-2p: 2 Hogwild processes x 1 thread, AdamW with shared moments.

Data: Flickr8k image features are not cached on this machine (bench/cache_flickr8k.py would
take 10+ minutes of CPU), so the benchmark uses `synthetic_embedding_data`: images and
captions that are noisy maps of a shared latent, at Flickr8k's shape (6,000 train / 1,000 dev
images, 5 captions each, 1280-d image features, 384-d text vectors; 64-d latent). Figures are
for this data, not for Flickr8k retrieval.

Per arm and round: wall time of `train` (start to return), dev T2I R@1 after every epoch
(with its wall time since start), the time to first reach the target R@1, and the final R@1.
The target is 0.95 x the median final T2I R@1 of sync-adamw-1t; the figure compares
Hogwild+Adagrad with the sync AdamW arm (1 or 2 threads) that reached it first. Extra Gaussian
noise (`--noise`) on the features keeps the task from being solved in one epoch. Rounds go round-robin
over the arms; medians are reported.

    OMP_NUM_THREADS=1 .venv/bin/python bench/hogwild_embedding.py [--rounds 3] [--epochs 6]

Writes bench/results/hogwild.md (with the summary block docs/benchmarks.md copies).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.ml.heads import EmbeddingConfig  # noqa: E402
from training.ml.config import EmbeddingTaskConfig, LoopConfig  # noqa: E402
from training.ml.embedding_task import EmbeddingTask, synthetic_embedding_data  # noqa: E402
from training.ml.trainer import train  # noqa: E402

MODEL = EmbeddingConfig(family="joint", dim=256, hidden=512, dropout=0.2)  # 1280 -> 256, 384 -> 256
# (name, optimizer, parallel, torch threads in the parent, lr): Adagrad takes a larger step.
ARMS = [("sync-adamw-1t", "adamw", "sync", 1, 1e-3), ("sync-adamw-2t", "adamw", "sync", 2, 1e-3),
        ("sync-adagrad-1t", "adagrad", "sync", 1, 2e-2), ("hogwild-adagrad-2p", "adagrad", "hogwild", 1, 2e-2),
        ("hogwild-adamw-2p", "adamw", "hogwild", 1, 1e-3)]
REFERENCE = "sync-adamw-1t"  # the target R@1 is 0.95 x its median final R@1


def run_arm(arm: tuple, data: tuple, epochs: int, batch: int, seed: int) -> dict:
    name, optimizer, parallel, threads, lr = arm
    train_data, dev_data = data
    torch.set_num_threads(threads)
    task = EmbeddingTask(MODEL, EmbeddingTaskConfig(), batch_size=batch, train=train_data, dev=dev_data, seed=seed)
    loop = LoopConfig(epochs=epochs, batch_size=batch, lr=lr, warmup_steps=50, early_stop_metric=None,
                      restore_best=False, seed=seed, optimizer=optimizer, parallel=parallel, workers=2,
                      log_every_steps=10_000)
    curve: list[tuple[float, float, float]] = []  # (wall s since start, t2i R@1, i2t R@1) per epoch
    t0 = time.perf_counter()

    def on_event(kind: str, payload: dict) -> None:
        if kind == "epoch":
            curve.append((time.perf_counter() - t0, payload["dev"]["t2i_r1"], payload["dev"]["i2t_r1"]))

    result = train(loop, task, device="cpu", on_event=on_event)
    wall = time.perf_counter() - t0
    torch.set_num_threads(1)
    return {"wall": wall, "curve": curve, "steps": result.steps,
            "final_t2i": curve[-1][1], "final_i2t": curve[-1][2]}


def _noisy(data, std: float, seed: int):
    """The same data with N(0, std^2) added to every image and text feature (seeded)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    image = data.image_feats + std * torch.randn(data.image_feats.shape, generator=g)
    text = data.text_feats + std * torch.randn(data.text_feats.shape, generator=g)
    return dataclasses.replace(data, image_feats=image, text_feats=text)


def _reach_or_inf(summary: dict, name: str) -> float:
    reach = summary.get(name, {}).get("reach")
    return reach if reach is not None else float("inf")


def time_to(curve: list[tuple[float, float, float]], target: float) -> float | None:
    return next((t for t, r1, _ in curve if r1 >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--dev-images", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=15.0,
                        help="std of extra Gaussian noise on the features (makes the synthetic task hard)")
    parser.add_argument("--arms", default=",".join(a[0] for a in ARMS))
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "hogwild.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = dict(captions=5, views=1, image_dim=1280, text_dim=384, latent=64, world_seed=0)
    data = tuple(_noisy(synthetic_embedding_data(n, seed=seed, **shape), args.noise, seed)
                 for n, seed in ((args.train_images, 0), (args.dev_images, 1)))
    arms = [a for a in ARMS if a[0] in args.arms.split(",")]
    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    runs: dict[str, list[dict]] = {a[0]: [] for a in arms}
    for r in range(args.rounds):
        for arm in arms:
            out = run_arm(arm, data, args.epochs, args.batch, seed=0)
            runs[arm[0]].append(out)
            print(f"round {r + 1}/{args.rounds} {arm[0]}: {out['wall']:.1f} s, final T2I R@1 {out['final_t2i']:.1f}",
                  flush=True)
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())

    target = 0.95 * statistics.median(o["final_t2i"] for o in runs[REFERENCE])
    date = datetime.now(UTC).date().isoformat()
    cmd = " ".join(shlex.quote(a) for a in ["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv])
    summary = {}
    for name, outs in runs.items():
        reach = [time_to(o["curve"], target) for o in outs]
        summary[name] = {
            "wall": statistics.median(o["wall"] for o in outs),
            "t2i": statistics.median(o["final_t2i"] for o in outs),
            "i2t": statistics.median(o["final_i2t"] for o in outs),
            "reach": statistics.median(reach) if all(x is not None for x in reach) else None,
            "reached": sum(x is not None for x in reach),
        }

    def fmt_reach(s: dict) -> str:
        return f"{s['reach']:.1f} s" if s["reach"] is not None else f"not reached in {args.rounds - s['reached']}" \
            f" of {args.rounds} rounds"

    lines = [
        "## Hogwild + Adagrad vs the synchronous loop (embedding heads, 2 cores)", "",
    ]
    hog = summary["hogwild-adagrad-2p"]
    # The synchronous reference: whichever sync AdamW arm (1 or 2 threads) reached the target first.
    sync_name = min(("sync-adamw-1t", "sync-adamw-2t"),
                    key=lambda n: _reach_or_inf(summary, n))
    sync = summary[sync_name]
    faster = sync["reach"] is not None and hog["reach"] is not None and hog["reach"] < sync["reach"]
    rows = [
        f"| time to dev T2I R@1 >= {target:.1f} (0.95 x sync AdamW's final), synthetic Flickr8k-shaped features | "
        f"Hogwild+Adagrad 2 processes {fmt_reach(hog)}, {sync_name} {fmt_reach(sync)} | faster than sync "
        f"| {'met' if faster else '**missed**'} | {date} | `{cmd}` |",
        f"| final dev T2I R@1 after {args.epochs} epochs | Hogwild+Adagrad {hog['t2i']:.1f}, {sync_name} "
        f"{sync['t2i']:.1f} | none (report) | reported | {date} | same |",
        f"| wall time of {args.epochs} epochs | Hogwild+Adagrad {hog['wall']:.1f} s, {sync_name} "
        f"{sync['wall']:.1f} s | none (report) | reported | {date} | same |",
    ]
    for name in summary:
        if name in ("hogwild-adagrad-2p", sync_name):
            continue
        s = summary[name]
        rows.append(f"| {name}: time to the target / final T2I R@1 / wall | {fmt_reach(s)} / {s['t2i']:.1f} / "
                    f"{s['wall']:.1f} s | none (report) | reported | {date} | same |")
    lines += ["<!-- summary: written by bench/hogwild_embedding.py; bench/report.py copies it into "
              "docs/benchmarks.md. -->", "| figure | measured | goal | met? | date | command |",
              "| --- | --- | --- | --- | --- | --- |", *rows, "",
              f"Synthetic features at Flickr8k's shape ({args.train_images} train / {args.dev_images} dev images, "
              "5 captions, 1280-d image and 384-d text features from a shared 64-d latent), NOT Flickr8k: no image "
              f"features are cached on this machine. Medians of {args.rounds} rounds, round-robin, one run; "
              "details in bench/results/hogwild.md, where it wins in docs/scaling.md.", "<!-- /summary -->", ""]
    lines += [f"Command: `{cmd}`", "",
              f"Machine: {os.cpu_count()}-core {platform.machine()} CPU shared with other jobs, no GPU; torch "
              f"{torch.__version__}. Load average (1/5/15 min) at start {load_start}, at end {load_end}. Date {date}.",
              "", f"Model: `{dataclasses.asdict(MODEL)}`; batch {args.batch}, {args.epochs} epochs, warm-up 50 steps "
              "then cosine, seed 0, no early stopping. Adagrad lr 2e-2, AdamW lr 1e-3.", "",
              "| arm | median wall s | median final T2I R@1 | median final I2T R@1 | median time to target | "
              "walls per round |", "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['wall']:.1f} | {s['t2i']:.1f} | {s['i2t']:.1f} | {fmt_reach(s)} | "
                     + ", ".join(f"{o['wall']:.1f}" for o in runs[name]) + " |")
    lines += ["", "Dev T2I R@1 after each epoch (wall s since start), first round:", "",
              "| arm | " + " | ".join(f"epoch {i + 1}" for i in range(args.epochs)) + " |",
              "|---|" + "---|" * args.epochs]
    for name, outs in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{r1:.1f} ({t:.0f} s)" for t, r1, _ in outs[0]["curve"]) + " |")
    text = "\n".join(lines) + "\n"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
