"""Benchmark: word2vec (skip-gram, negative sampling) on the Flickr8k train captions.

Trains `embeddings.ml.word2vec` on the 30,000 train-split captions, times several runs
(median reported), prints nearest words for a few probes and a few analogies with the rank
of the expected answer, saves the vectors of the first run under var/cache/word2vec/ and
writes the markdown section bench/results/word2vec.md.

    .venv/bin/python bench/word2vec_flickr8k.py [--runs 3] [--optimizers adam,sparse_adam,sgd] [--threads 2,1]
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


def run_one(captions: list[str], config: Word2VecConfig, threads: int) -> tuple[Word2Vec, float, float]:
    """(model, wall seconds, CPU seconds of this process) of one training run."""
    torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    model = train_word2vec(captions, config, device="cpu")
    return model, time.perf_counter() - wall, time.process_time() - cpu


def timed_runs(
    captions: list[str], configs: dict[str, Word2VecConfig], threads: list[int], runs: int
) -> dict[tuple[str, int], list[tuple[Word2Vec, float, float]]]:
    """Round-robin over (optimizer, threads) so a change in machine load hits every setting alike."""
    results: dict[tuple[str, int], list[tuple[Word2Vec, float, float]]] = {}
    for r in range(runs):
        for name, config in configs.items():
            for t in threads:
                results.setdefault((name, t), []).append(run_one(captions, config, t))
                print(f"run {r + 1}/{runs} {name} threads={t}: wall {results[(name, t)][-1][1]:.1f} s", flush=True)
    return results


def timing_table(results: dict[tuple[str, int], list[tuple[Word2Vec, float, float]]]) -> list[str]:
    rows = [
        "| optimizer | threads | median wall s | wall s per run | median CPU s | epoch loss first -> last "
        "| same vectors every run |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, t), runs in results.items():
        model, walls, cpus = runs[0][0], [r[1] for r in runs], [r[2] for r in runs]
        identical = all(torch.equal(r[0].vectors, model.vectors) for r in runs)
        same = "n/a" if len(runs) == 1 else "yes" if identical else "NO"
        rows.append(
            f"| {name} | {t} | {statistics.median(walls):.1f} | {', '.join(f'{x:.1f}' for x in walls)} "
            f"| {statistics.median(cpus):.1f} | {model.epoch_losses[0]:.3f} -> {model.epoch_losses[-1]:.3f} | {same} |"
        )
    return rows


def quality_section(name: str, model: Word2Vec, path: Path) -> list[str]:
    out = [f"### optimizer={name}", "", f"Config: `{model.config.to_dict()}`", f"Saved: `{path}`", ""]
    out += ["| probe | 6 nearest words (cosine) |", "|---|---|"]
    out += [f"| {w} | {fmt(model.nearest(w, 6))} |" for w in PROBES]
    out += ["", "| analogy | expected | rank of expected | top 5 (cosine) |", "|---|---|---|---|"]
    return out + analogy_rows(model) + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--optimizers", default="adam,sparse_adam,sgd")
    parser.add_argument("--threads", default="2,1", help="torch thread counts to time, comma-separated")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "cache" / "word2vec")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "word2vec.md")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    captions = load_train_captions(args.data)
    n_tokens = sum(len(tokenize(c)) for c in captions)
    configs = {name: Word2VecConfig(optimizer=name, lr=LR[name]) for name in args.optimizers.split(",")}  # type: ignore[arg-type]
    results = timed_runs(captions, configs, threads, args.runs)
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    out = [
        "## word2vec on Flickr8k train captions",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['.venv/bin/python', *sys.argv])}`",
        "",
        f"Machine: {os.cpu_count()}-core {platform.machine()} CPU shared with other jobs, no GPU; "
        f"torch {torch.__version__}. Load average (1/5/15 min) at start {load_start}, at end {load_end}.",
        f"Data: {len(captions)} train captions, {n_tokens} tokens (caption tokenizer).",
        "",
        f"Time of `train_word2vec` (tokenising, vocabulary, pairs and {Word2VecConfig().epochs} epochs), "
        f"{args.runs} run(s) per setting, round-robin over the settings. CPU s is this process's CPU "
        "time (user + system, all threads; spinning threads count too).",
        "",
        *timing_table(results),
        "",
    ]
    for name in configs:
        model = results[(name, threads[0])][0][0]
        path = save_word2vec(model, args.cache / f"flickr8k-train-{name}.safetensors")
        assert torch.equal(load_word2vec(path).vectors, model.vectors)
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        out += quality_section(name, model, shown)
    text = "\n".join(out)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
