"""Benchmark: gensim's word2vec vs the hand-written torch skip-gram, Flickr8k train captions.

Issue 17, item 1: the product's word2vec (`embeddings.ml.word2vec`, gensim 4 skip-gram with
negative sampling) side by side with the torch trainer it replaced, on the 30,000 train-split
captions, same tokens and same epochs / dim / window / negatives / min_count / sample:

- time: wall and CPU seconds of the whole training call, gensim with `workers` threads vs the
  torch trainer with that many torch threads, round-robin over the arms, median of `--runs`;
- quality, per run: top-10 neighbours of a fixed probe list compared with a reference (the other
  trainer, and all-MiniLM-L6-v2 encoding each vocabulary word on its own), hand-picked sanity
  triples (w is nearer to its partner than to an unrelated word), and the analogy set the words
  page offers (`CLASSIC_ANALOGIES`, 3CosAdd ranked by the same code for both).

The torch trainer no longer lives in the product: it is read from git (`--baseline-rev`, the
last commit that had it) and imported as a module, so this comparison can be re-run as is.

    OMP_NUM_THREADS=1 .venv/bin/python bench/word2vec_flickr8k.py [--runs 3] [--threads 2,1]

Writes bench/results/word2vec.md (with the summary block docs/benchmarks.md copies).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.ml.word2vec import (  # noqa: E402
    CLASSIC_ANALOGIES, Word2Vec, Word2VecConfig, analogies_in_vocabulary, tokenize, train_word2vec)

BASELINE_REV = "847ee5c"  # the last commit with the hand-written trainer in embeddings/ml/word2vec.py
PROBES = ["dog", "cat", "man", "woman", "child", "beach", "water", "snow", "grass", "red", "blue", "ball",
          "bike", "running", "jumping", "swimming", "street", "mountain", "shirt", "car"]
# (word, nearer partner, unrelated word): a sane model puts the partner nearer.
SANITY = [("dog", "puppy", "building"), ("beach", "ocean", "bicycle"), ("red", "blue", "dog"),
          ("man", "woman", "water"), ("running", "runs", "shirt"), ("snow", "snowy", "shirt"),
          ("boy", "girl", "rock"), ("bike", "bicycle", "grass"), ("shirt", "jacket", "lake"),
          ("water", "lake", "jacket"), ("child", "kid", "street"), ("car", "truck", "grass")]


def load_train_captions(data: Path) -> list[str]:
    train = set((data / "Flickr_8k.trainImages.txt").read_text().split())
    captions = []
    for line in (data / "Flickr8k.token.txt").read_text().splitlines():
        image, _, caption = line.partition("\t")
        if image.split("#")[0] in train:
            captions.append(caption)
    return captions


def load_baseline(rev: str) -> types.ModuleType:
    """The hand-written torch word2vec as it was at `rev`, imported from git."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:embeddings/ml/word2vec.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("torch_word2vec_baseline")
    module.__file__ = f"{rev}:embeddings/ml/word2vec.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up here
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102  # our own file from git
    return module


def as_product(model: Any) -> Word2Vec:
    """The baseline's vectors in the product's query class (the same ranking code for both)."""
    return Word2Vec(Word2VecConfig(dim=model.config.dim), _vocab(model), model.vectors)


def _vocab(model: Any) -> Any:
    from embeddings.ml.word2vec import Vocab

    return Vocab(model.vocab.words, model.vocab.counts)


def run_arm(arm: str, tokens: list[list[str]], threads: int,
            baseline: types.ModuleType) -> tuple[Word2Vec, float, float]:
    """(vectors, wall s, CPU s of this process) of one training run of one arm."""
    torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    if arm == "gensim":
        model = train_word2vec(tokens, Word2VecConfig(workers=threads))
    else:
        model = as_product(baseline.train_word2vec(tokens, baseline.Word2VecConfig(), device="cpu"))
    out = model, time.perf_counter() - wall, time.process_time() - cpu
    torch.set_num_threads(1)
    return out


def overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / len(a)


def minilm_neighbours(words: tuple[str, ...], probes: list[str], k: int) -> dict[str, list[str]]:
    """Top-k neighbours of each probe among `words` by MiniLM cosine (each word encoded alone)."""
    from embeddings.ml.text_encoder import TextEncoder

    vecs = TextEncoder().encode(list(words), batch_size=256)  # (V, 384), unit
    index = {w: i for i, w in enumerate(words)}
    out = {}
    for p in probes:
        sims = vecs @ vecs[index[p]]
        sims[index[p]] = -2.0
        out[p] = [words[int(i)] for i in torch.topk(sims, k).indices]
    return out


def quality(model: Word2Vec, refs: dict[str, dict[str, list[str]]], k: int) -> dict[str, Any]:
    mine = {p: [w for w, _ in model.nearest(p, k)] for p in PROBES}
    q: dict[str, Any] = {f"top{k} overlap vs {name}": statistics.mean(overlap(mine[p], ref[p]) for p in PROBES)
                         for name, ref in refs.items()}
    q["sanity triples right"] = sum(model.similarity(w, near) > model.similarity(w, far) for w, near, far in SANITY)
    ranks = []
    for a, b, c, want in analogies_in_vocabulary(model):
        top = [w for w, _ in model.analogy(a, b, c, k=len(model))]
        ranks.append(top.index(want) + 1)
    q["analogy ranks"] = ranks
    q["neighbours"] = mine
    return q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per arm (median reported)")
    parser.add_argument("--threads", default="2,1", help="threads per arm: gensim workers / torch threads")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "word2vec.md")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    baseline = load_baseline(args.baseline_rev)
    torch.set_num_threads(1)

    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    captions = load_train_captions(args.data)
    tokens = [tokenize(c) for c in captions]
    arms = [(arm, t) for t in threads for arm in ("gensim", "torch")]
    runs: dict[tuple[str, int], list[tuple[Word2Vec, float, float]]] = {a: [] for a in arms}
    for r in range(args.runs):
        for arm, t in arms:  # round-robin, so a change of machine load hits every arm alike
            runs[(arm, t)].append(run_arm(arm, tokens, t, baseline))
            print(f"run {r + 1}/{args.runs} {arm} threads={t}: wall {runs[(arm, t)][-1][1]:.1f} s", flush=True)
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())

    k = 10
    first = runs[arms[0]][0][0]
    shared = [w for w in first.words if all(w in m for rs in runs.values() for m, _, _ in rs)]
    missing = [p for p in PROBES if p not in shared]
    if missing:
        raise SystemExit(f"probe words missing from a vocabulary: {missing}")
    minilm = minilm_neighbours(tuple(shared), PROBES, k)
    qualities: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for (arm, t), rs in runs.items():
        other = "torch" if arm == "gensim" else "gensim"
        qualities[(arm, t)] = []
        for i, (model, _, _) in enumerate(rs):
            ref = runs[(other, t)][i][0]
            other_nb = {p: [w for w, _ in ref.nearest(p, k)] for p in PROBES}
            qualities[(arm, t)].append(quality(model, {"MiniLM": minilm, f"the {other} run": other_nb}, k))

    date = datetime.now(UTC).date().isoformat()
    cmd = " ".join(shlex.quote(a) for a in ["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv])
    analogies = analogies_in_vocabulary(first)
    med = {a: statistics.median(w for _, w, _ in rs) for a, rs in runs.items()}
    lines = [
        "## word2vec on Flickr8k train captions",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {os.cpu_count()}-core {platform.machine()} CPU shared with other jobs, no GPU; torch "
        f"{torch.__version__}, gensim {__import__('gensim').__version__}. Load average (1/5/15 min) at start "
        f"{load_start}, at end {load_end}. Date {date}.",
        f"Data: {len(captions)} train captions, {sum(map(len, tokens))} tokens (caption tokenizer), "
        f"{len(first)} words at min_count 5.",
        "",
        "Both arms: skip-gram, negative sampling, dim 100, window 5, 5 negatives, min_count 5, sample 1e-3, "
        "5 epochs, seed 0. gensim: `embeddings.ml.word2vec.train_word2vec` (plain SGD, alpha 0.025 -> 1e-4, "
        "`workers` lock-free threads). torch: the hand-written trainer at "
        f"`{args.baseline_rev}` with its defaults (dense Adam, lr 0.01, batch 4096), `torch.set_num_threads`. "
        f"{args.runs} runs per arm, round-robin; CPU s is this process's CPU time (all threads).",
        "",
        "| arm | threads | median wall s | wall s per run | median CPU s |",
        "|---|---|---|---|---|",
    ]
    for (arm, t), rs in runs.items():
        lines.append(f"| {arm} | {t} | {med[(arm, t)]:.1f} | {', '.join(f'{w:.1f}' for _, w, _ in rs)} "
                     f"| {statistics.median(c for _, _, c in rs):.1f} |")
    lines += ["", f"Quality, median over the {args.runs} runs (top-{k} overlap: mean over the {len(PROBES)} probes "
              f"of |shared neighbours| / {k}; sanity: of {len(SANITY)} triples; analogies: the "
              f"{len(analogies)} of the words page's {len(CLASSIC_ANALOGIES)} whose words are all in the "
              "vocabulary, " + ", ".join(f"{a}:{b}::{c}:{d}" for a, b, c, d in analogies) + ").", "",
              f"| arm | threads | top-{k} overlap vs MiniLM | top-{k} overlap vs the other trainer | sanity triples "
              "right | analogies with the answer first | analogy ranks, first run |",
              "|---|---|---|---|---|---|---|"]
    summary: dict[tuple[str, int], dict[str, float]] = {}
    for (arm, t), qs in qualities.items():
        other_key = next(key for key in qs[0] if key.startswith(f"top{k} overlap vs the"))
        s = {"minilm": statistics.median(q[f"top{k} overlap vs MiniLM"] for q in qs),
             "other": statistics.median(q[other_key] for q in qs),
             "sanity": statistics.median(q["sanity triples right"] for q in qs),
             "firsts": statistics.median(sum(r == 1 for r in q["analogy ranks"]) for q in qs)}
        summary[(arm, t)] = s
        lines.append(f"| {arm} | {t} | {s['minilm']:.3f} | {s['other']:.3f} | {s['sanity']:g}/{len(SANITY)} | "
                     f"{s['firsts']:g}/{len(analogies)} | {qs[0]['analogy ranks']} |")
    lines += ["", "Neighbours of a few probes, first run at the first thread count:", "",
              "| probe | gensim | torch | MiniLM |", "|---|---|---|---|"]
    t0 = threads[0]
    for p in PROBES[:8]:
        g, h = qualities[("gensim", t0)][0]["neighbours"][p], qualities[("torch", t0)][0]["neighbours"][p]
        lines.append(f"| {p} | {', '.join(g[:6])} | {', '.join(h[:6])} | {', '.join(minilm[p][:6])} |")

    speed = {t: med[("torch", t)] / med[("gensim", t)] for t in threads}
    gs, ts = summary[("gensim", t0)], summary[("torch", t0)]
    rows = [
        f"| gensim / torch trainer, median wall time of the whole training call, {t} thread"
        f"{'' if t == 1 else 's'} | gensim {med[('gensim', t)]:.1f} s, torch {med[('torch', t)]:.1f} s "
        f"({speed[t]:.1f}x faster) | faster | {'met' if speed[t] > 1 else '**missed**'} | {date} | "
        + (f"`{cmd}` |" if i == 0 else "same |") for i, t in enumerate(threads)]
    # The word explorer's earlier goal, kept: the whole training call under a minute.
    for t in threads:
        wall = med[("gensim", t)]
        verdict = "met" if wall < 60 else f"**missed** by {wall - 60:.1f} s"
        rows.append(f"| gensim, {t} thread{'' if t == 1 else 's'}: median wall time of the whole train_word2vec "
                    f"(5 epochs) | {wall:.1f} s | < 1 min (target) | {verdict} | {date} | same |")
    rows += [
        f"| top-{k} neighbour overlap with MiniLM, {len(PROBES)} probes, {t0} threads | gensim {gs['minilm']:.3f}, "
        f"torch {ts['minilm']:.3f} | better | {'met' if gs['minilm'] >= ts['minilm'] else '**missed**'} "
        f"| {date} | same |",
        f"| top-{k} neighbour overlap between the two trainers | {gs['other']:.3f} | none | reported | {date} | same |",
        f"| sanity triples right | gensim {gs['sanity']:g}/{len(SANITY)}, torch {ts['sanity']:g}/{len(SANITY)} "
        f"| better | {'met' if gs['sanity'] >= ts['sanity'] else '**missed**'} | {date} | same |",
        f"| words-page analogies with the answer ranked first | gensim {gs['firsts']:g}/{len(analogies)}, torch "
        f"{ts['firsts']:g}/{len(analogies)} | better | {'met' if gs['firsts'] >= ts['firsts'] else '**missed**'} "
        f"| {date} | same |",
    ]
    block = ["<!-- summary: written by bench/word2vec_flickr8k.py; bench/report.py copies it into "
             "docs/benchmarks.md. \"better\" means at least as good as the torch trainer. -->",
             "| figure | measured | goal | met? | date | command |", "| --- | --- | --- | --- | --- | --- |",
             *rows, "", "gensim's multi-threaded training is lock-free asynchronous SGD (Hogwild): its worker "
             "threads update the shared word matrices without locks. Medians of the runs, side by side in one run; "
             "details in bench/results/word2vec.md.", "<!-- /summary -->", ""]
    text = "\n".join(lines[:1] + [""] + block + lines[2:]) + "\n"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
