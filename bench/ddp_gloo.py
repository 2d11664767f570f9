"""Data-parallel training on this CPU: 2 gloo processes (torchrun) vs 1 process, same global batch.

Usage (from the repo root, after bench/cache_flickr8k.py has cached the Flickr8k features):

    .venv/bin/python bench/ddp_gloo.py [--epochs 3] [--rounds 3] [--results bench/results/ddp.md]

Trains the joint-embedding heads of bench/train_embedding_flickr8k.py's recipe (orig view,
no early stop) for --epochs epochs, alternately as one process with one torch thread and as
two torchrun ranks with one thread each (gloo; every rank takes half of each global batch of
256 images, the contrastive loss gathers across ranks). Both start from the same seed and see
the same global batches, so they should end at the same weights up to float summation order:
the script compares the final dev metrics and the largest parameter difference. Reports the
medians of the training wall times over rounds and their ratio. On 2 cores shared with other
jobs, 2 ranks cannot be much faster than 1: every step also pays an all-reduce and a gather.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.cached_features import load_split  # noqa: E402
from training.ml.config import TrainConfig, apply_overrides  # noqa: E402
from training.ml.embedding_task import EmbeddingTask  # noqa: E402
from train_embedding_flickr8k import BENCH_DEFAULTS  # noqa: E402


def build(cache: Path, epochs: int) -> tuple[TrainConfig, EmbeddingTask]:
    config = apply_overrides(TrainConfig.default(), BENCH_DEFAULTS + [
        f"loop.epochs={epochs}", "loop.patience=0", "loop.seed=0", "loop.log_every_steps=1000",
        # Dropout masks come from each process's own RNG, so with dropout the two arms would
        # differ by design; without it they must agree up to float summation order.
        "model.dropout=0.0"])
    train = load_split(cache, "train", image_field="pooled", views=("orig",))
    dev = load_split(cache, "dev", image_field="pooled", views=("orig",))
    task = EmbeddingTask(config.model, config.task, batch_size=config.loop.batch_size, train=train.data,
                         dev=dev.data, seed=config.loop.seed)
    return config, task


def worker(args: argparse.Namespace) -> None:
    """One training run: 1 process, or one rank under torchrun (RANK set)."""
    torch.set_num_threads(1)
    config, task = build(args.cache, args.epochs)
    distributed = "RANK" in os.environ
    t0 = time.perf_counter()
    if distributed:
        import torch.distributed as dist

        from training.ml.distributed import train_distributed

        result = train_distributed(config.loop, task, device="cpu")
        rank = dist.get_rank()
    else:
        from training.ml.trainer import train

        result = train(config.loop, task, device="cpu")
        rank = 0
    train_s = time.perf_counter() - t0
    if rank == 0:
        dev = task.evaluate(task.model)
        save_file({k: v.detach().cpu().contiguous() for k, v in task.model.state_dict().items()},
                  str(args.out / "weights.safetensors"))
        (args.out / "result.json").write_text(json.dumps({"train_s": train_s, "dev": dev, "steps": result.steps}))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def run_arm(args: argparse.Namespace, nproc: int, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [str(REPO / "bench" / "ddp_gloo.py"), "--worker", "--epochs", str(args.epochs), "--cache", str(args.cache),
            "--out", str(out)]
    cmd = ([sys.executable, *base] if nproc == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *base])
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=REPO)
    wall = time.perf_counter() - t0
    data = json.loads((out / "result.json").read_text())
    data["wall_s"] = wall
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "flickr8k")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "ddp.md")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="loupe-ddp-"))
    load_before = os.getloadavg()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    diffs = []
    for r in range(args.rounds):
        for nproc in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[nproc].append(run_arm(args, nproc, tmp / f"r{r}-n{nproc}"))
            print(f"round {r + 1}, {nproc} process(es): train {runs[nproc][-1]['train_s']:.1f} s, "
                  f"wall {runs[nproc][-1]['wall_s']:.1f} s, dev rsum {runs[nproc][-1]['dev']['rsum']:.2f}", flush=True)
        one = load_file(str(tmp / f"r{r}-n1" / "weights.safetensors"))
        two = load_file(str(tmp / f"r{r}-n2" / "weights.safetensors"))
        diffs.append(max(float((one[k] - two[k]).abs().max()) for k in one))
    med = {n: statistics.median(x["train_s"] for x in runs[n]) for n in runs}
    wall = {n: statistics.median(x["wall_s"] for x in runs[n]) for n in runs}
    dev1, dev2 = runs[1][0]["dev"], runs[2][0]["dev"]
    per_round = {n: ", ".join(f"{x['train_s']:.1f}" for x in runs[n]) for n in runs}
    rows = [f"| {n} | {per_round[n]} | {med[n]:.1f} | {wall[n]:.1f} | "
            f"{runs[n][0]['dev']['t2i_r1']:.2f} | {runs[n][0]['dev']['i2t_r1']:.2f} | {runs[n][0]['dev']['rsum']:.2f} |"
            for n in (1, 2)]
    text = "\n".join([
        "## Data-parallel training: 2 gloo processes vs 1 (same global batch)",
        "",
        f"Command: `.venv/bin/python bench/ddp_gloo.py --epochs {args.epochs} --rounds {args.rounds}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, no GPU; "
        f"torch {torch.__version__}; "
        f"load average before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}.",
        "",
        f"Joint-embedding heads (bench/train_embedding_flickr8k.py recipe, orig view only, dropout 0 so both arms "
        f"must reach the same weights), {args.epochs} epochs of "
        f"{runs[1][0]['steps'] // args.epochs} steps, global batch 256 images; one torch thread per process. "
        "Train s = the training loop (rank 0); wall = the whole process incl. start-up and loading the cache.",
        "",
        "| processes | train s per round | median train s | median wall s | dev T2I R@1 | dev I2T R@1 | dev rsum |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"**Speed-up of 2 ranks over 1 (median train s): {med[1] / med[2]:.2f}x**; "
        f"largest parameter difference after training, per round: {', '.join(f'{d:.2e}' for d in diffs)}; "
        f"dev rsum {dev1['rsum']:.2f} (1 process) vs {dev2['rsum']:.2f} (2 ranks).",
        "",
    ])
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
