"""Benchmark: word2vec (skip-gram, negative sampling) on the Flickr8k train captions.

Trains `embeddings.ml.word2vec` on the 30,000 train-split captions, times several runs
(median reported), prints nearest words for a few probes and a few analogies with the rank
of the expected answer, saves the vectors of the first run under var/cache/word2vec/ and
writes the markdown section bench/results/word2vec.md.

    .venv/bin/python bench/word2vec_flickr8k.py [--runs 3] [--optimizers sparse_adam,sgd]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.ml.word2vec import UnknownWord, Word2Vec, Word2VecConfig, tokenize, train_word2vec  # noqa: E402
from embeddings.ml.word2vec_io import load_word2vec, save_word2vec  # noqa: E402

PROBES = ["dog", "beach", "red", "running", "snow"]
# (a, b, c, expected): "a is to b as c is to expected" = b - a + c.
ANALOGIES = [
    ("man", "boy", "woman", "girl"),
    ("dog", "dogs", "man", "men"),
    ("man", "men", "woman", "women"),
    ("boy", "girl", "man", "woman"),
    ("walking", "walks", "running", "runs"),
    ("dog", "dogs", "child", "children"),
]
# Per-optimizer starting learning rate (the config's lr is tuned for sparse_adam).
LR = {"sparse_adam": 0.01, "adam": 0.01, "sgd": 0.025}


def load_train_captions(data: Path) -> list[str]:
    train = set((data / "Flickr_8k.trainImages.txt").read_text().split())
    captions = []
    for line in (data / "Flickr8k.token.txt").read_text().splitlines():
        image, _, caption = line.partition("\t")
        if image.split("#")[0] in train:
            captions.append(caption)
    return captions


def fmt(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{w} ({s:.2f})" for w, s in pairs)


def analogy_rows(model: Word2Vec) -> list[str]:
    rows = []
    for a, b, c, want in ANALOGIES:
        try:
            top = model.analogy(a, b, c, k=len(model))
        except UnknownWord as exc:
            rows.append(f"| {a}:{b} :: {c}:? | {want} | - | unknown word {exc.word!r} |")
            continue
        rank = next((i + 1 for i, (w, _) in enumerate(top) if w == want), None)
        rows.append(f"| {a}:{b} :: {c}:? | {want} | {rank} | {fmt(top[:5])} |")
    return rows


def run_one(captions: list[str], config: Word2VecConfig) -> tuple[Word2Vec, float, float]:
    """(model, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    model = train_word2vec(captions, config, device="cpu")
    return model, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per optimizer (median reported)")
    parser.add_argument("--optimizers", default="sparse_adam,adam,sgd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache" / "word2vec")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "word2vec.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    captions = load_train_captions(args.data)
    n_tokens = sum(len(tokenize(c)) for c in captions)
    out = [
        "## word2vec on Flickr8k train captions",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['.venv/bin/python', *sys.argv])}`",
        "",
        f"Machine: {platform.machine()} CPU, torch {torch.__version__}, {args.threads} threads, no GPU "
        "(shared with other jobs, so times are indicative).",
        f"Data: {len(captions)} train captions, {n_tokens} tokens (caption tokenizer).",
        "",
    ]
    preamble = len(out)
    timing_rows = []
    for name in args.optimizers.split(","):
        config = Word2VecConfig(optimizer=name, lr=LR[name])  # type: ignore[arg-type]
        runs = [run_one(captions, config) for _ in range(args.runs)]
        model, walls, cpus = runs[0][0], [r[1] for r in runs], [r[2] for r in runs]
        same = "n/a" if len(runs) == 1 else "yes" if all(torch.equal(r[0].vectors, model.vectors) for r in runs) else "NO"
        timing_rows.append(
            f"| {name} | {len(model)} | {statistics.median(walls):.1f} | {', '.join(f'{t:.1f}' for t in walls)} "
            f"| {statistics.median(cpus):.1f} | {model.epoch_losses[0]:.3f} -> {model.epoch_losses[-1]:.3f} | {same} |"
        )
        path = save_word2vec(model, args.cache / f"flickr8k-train-{name}.safetensors")
        assert torch.equal(load_word2vec(path).vectors, model.vectors)
        out += [f"### optimizer={name}", "", f"Config: `{config.to_dict()}`", f"Saved: `{path.relative_to(ROOT)}`", ""]
        out += ["| probe | 6 nearest words (cosine) |", "|---|---|"]
        out += [f"| {w} | {fmt(model.nearest(w, 6))} |" for w in PROBES]
        out += ["", "| analogy | expected | rank of expected | top 5 (cosine) |", "|---|---|---|---|"]
        out += analogy_rows(model) + [""]
        print("\n".join(out[-(len(PROBES) + len(ANALOGIES) + 10) :]), flush=True)
    head = [
        f"Time of `train_word2vec` (tokenising, vocabulary, pairs and {Word2VecConfig().epochs} epochs), "
        f"{args.runs} run(s) per optimizer, one after the other. CPU s is this process's CPU time "
        "(user + system, all threads), less sensitive than wall time to other jobs on the machine. "
        f"Load average at start {load_start}, at end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
        "| optimizer | vocab | median wall s | wall s per run | median CPU s | epoch loss first -> last "
        "| same vectors every run |",
        "|---|---|---|---|---|---|---|",
        *timing_rows,
        "",
    ]
    out[preamble:preamble] = head
    text = "\n".join(out)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print("\n".join(head))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
