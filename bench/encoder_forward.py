"""Image encoder forward, three arms side by side: the library's EfficientNet-Lite as it is; with
its symmetric "same" paddings folded into the convs (`image_encoder.fold_same_padding`, NCHW);
and the product's encoder (folded and channels-last on the CPU).

Usage (from the repo root):

    .venv/bin/python bench/encoder_forward.py [--images 64] [--rounds 9] [--batch 4] [--processes 3]

The same Flickr8k dev photos (read from ../shared/data/flickr8k, never copied), decoded and
preprocessed once, so only the forward is timed; forwards of `--batch` images (the product's
LOUPE_ENCODE_BATCH on CPU), one torch/OMP thread, arms interleaved with the order alternating
per round. Every arm goes through `ImageEncoder.encode`; the library arm's backbone is the
library's own model, unchanged. The folded arm's outputs are compared for equality with the
library's, the product's for their largest absolute difference. The whole measurement runs in
`--processes` fresh processes one after another (the speed of one layout was seen to differ
from one process to the next by up to 30%, the other arms' much less), and the median of their
ratios is reported, each process's too. Writes bench/results/encoder_forward.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench import ingest_common as common  # noqa: E402
from embeddings.ml.image_encoder import LITE2, MODEL_NAME, ImageEncoder, _load_backbone  # noqa: E402
from embeddings.ml.transforms import batch_tensors, load_rgb  # noqa: E402

RESULTS = REPO / "bench" / "results" / "encoder_forward.md"


def photos(n: int, size: int) -> list[torch.Tensor]:
    return [batch_tensors([load_rgb(common.DATA / "images" / name)], size=size)[0]
            for name in common.flickr_names("dev", n)]


def ms_per_image(encoder: ImageEncoder, batches: list[torch.Tensor]) -> float:
    t0 = time.perf_counter()
    for x in batches:
        encoder.encode(x)
    return (time.perf_counter() - t0) * 1000 / sum(len(x) for x in batches)


def measure(name: str, n: int, rounds: int, batch: int) -> dict:
    product = ImageEncoder(model_name=name)
    folded = ImageEncoder(model_name=name, channels_last=False)
    library = ImageEncoder(model_name=name, channels_last=False)
    library.backbone = _load_backbone(library.weights_path, name).eval()
    tensors = photos(n, product.image_size)
    batches = [torch.stack(tensors[i:i + batch]) for i in range(0, len(tensors), batch)]
    ref = [library.encode(x) for x in batches[:4]]
    same = all(torch.equal(r[k], folded.encode(x)[k]) for r, x in zip(ref, batches) for k in r)
    diff = max(float((r[k] - product.encode(x)[k]).abs().max()) for r, x in zip(ref, batches) for k in r)
    arms = {"library": library, "folded": folded, "product": product}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for arm in order:
            times[arm].append(ms_per_image(arms[arm], batches))
    ratio = {arm: statistics.median(t / q for t, q in zip(times[arm], times["library"])) for arm in arms}
    return {"name": name, "times": times, "ratio": ratio, "same": same, "diff": diff,
            "median": {arm: statistics.median(t) for arm, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps([measure(name, args.images, args.rounds, args.batch) for name in (MODEL_NAME, LITE2)]))
        return
    flags = f"--images {args.images} --rounds {args.rounds} --batch {args.batch}"
    command = f"OMP_NUM_THREADS=1 .venv/bin/python bench/encoder_forward.py {flags} --processes {args.processes}"
    runs = [json.loads(subprocess.run([sys.executable, __file__, *flags.split(), "--child"], check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(args.processes)]
    today = date.today().isoformat()
    lines = ["## Image encoder forward (folded paddings, channels-last)", "", "<!-- summary -->",
             "| figure | measured | goal | met? | date | command |", "| --- | --- | --- | --- | --- | --- |"]
    for i, name in enumerate((MODEL_NAME, LITE2)):
        rows = [run[i] for run in runs]
        same, diff = all(r["same"] for r in rows), max(r["diff"] for r in rows)
        for arm, what, check in (("product", "product / library, same photos, same run",
                                  f"largest difference {diff:.1e}"),
                                 ("folded", "folded paddings alone (NCHW) / library",
                                  f"outputs {'bit-identical' if same else 'DIFFER'}")):
            ratios = [r["ratio"][arm] for r in rows]
            lines.append(f"| {name} forward ms/image: {what} | "
                         f"{statistics.median(r['median'][arm] for r in rows):.1f} / "
                         f"{statistics.median(r['median']['library'] for r in rows):.1f} ms, ratio "
                         f"{statistics.median(ratios):.3f} (processes: {', '.join(f'{x:.2f}' for x in ratios)}) | "
                         f"| reported ({check}) | {today} | `{command}` |")
    lines += ["<!-- /summary -->", "", f"Command: `{command}`", "",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other work), no GPU; "
              f"torch {torch.__version__}; one torch/OMP thread; {args.images} Flickr8k dev photos, forwards of "
              f"{args.batch}; in each of {args.processes} processes, {args.rounds} interleaved rounds (the order "
              "alternates). Ratio: per process the median over rounds of arm / library in the same round; the "
              "figure is the median over processes. Per-round medians in ms per image:", "",
              "| encoder | process | library | folded | product |", "| --- | --- | --- | --- | --- |"]
    for p, run in enumerate(runs, 1):
        for row in run:
            med = row["median"]
            lines.append(f"| {row['name']} | {p} | {med['library']:.1f} | {med['folded']:.1f} | {med['product']:.1f} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
