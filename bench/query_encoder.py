"""Query-encoder options, one run: latency of one query on 1 thread, R@1 and cosine vs fp32.

Usage (from the repo root; after bench/build_ood_set.py built var/ood):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/query_encoder.py \
        [--rounds 5] [--queries 300] [--cache var/bench/query-encoder] [--write]

Arms (embeddings/ml/query_encoders.py, the product's own code; exports built at run time under
--cache/models, never downloaded): torch (the fp32 TextEncoder the product used), onnx (its
ONNX Runtime export), onnx-int8 (that export, dynamically quantised), torch-int8 (dynamic
quantisation of the Linear layers), static (embeddings/ml/static_text.py: a word-piece table
distilled from MiniLM with model2vec's recipe, fitted to MiniLM's vectors of the Flickr8k train
captions and the ImageNet class names, served by model2vec's StaticModel: what
`manage.py build_query_encoder` builds for a Flickr8k collection).

- Latency: `--queries` texts (Flickr8k dev captions and out-of-domain sentences, half each),
  one at a time (the search-request shape); in each round every query is encoded by every arm
  in turn (the arm order rotates per query), so contention on the shared machine hits all arms
  alike. Figures: median over rounds of each round's median (and p90).
- Quality: text->image R@1 of the shipped embedding (models/embedding-open-vocab) on Flickr8k
  dev (1,000 images, 5,000 captions) and the out-of-domain dev set (bench/build_ood_set.py),
  with each arm's query vectors (each text encoded alone, as a search does) against the same
  image vectors (only the text tower changes; bench/query_encoder_data.py caches them), and the
  cosine of each arm's 384-d vectors with fp32's.
- --write: bench/results/query_encoder.md (+ query_encoder.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.query_encoder_data import DEFAULT_CACHE, eval_sets  # noqa: E402
from embeddings.ml.embedder import JointEmbedder  # noqa: E402
from embeddings.ml.query_encoders import (OnnxTextEncoder, TorchInt8TextEncoder,  # noqa: E402
                                          TorchTextEncoder, load_or_build_onnx)
from embeddings.ml.conse import load_class_names  # noqa: E402
from embeddings.ml.static_text import build_static as build_tower  # noqa: E402
from embeddings.ml.static_text import load_static, tower_corpus  # noqa: E402
from embeddings.ml.text_encoder import TextEncoder  # noqa: E402
from training.ml.retrieval_metrics import retrieval_metrics  # noqa: E402

SHIPPED = REPO / "models" / "embedding-open-vocab"
RESULTS = REPO / "bench" / "results"
GATE = 1.0  # R@1 points an arm may lose against fp32 (issue 15 item 7)


def flickr8k_train_captions() -> list[str]:
    from bench.query_encoder_data import FLICKR

    train = set((FLICKR / "Flickr_8k.trainImages.txt").read_text().split())
    return [line.split("\t", 1)[1].strip() for line in (FLICKR / "Flickr8k.token.txt").read_text().splitlines()
            if line.split("#", 1)[0] in train]


def build_static(enc: TextEncoder, cache: Path, *, epochs: int, spans: int):
    """The static arm, built as the product builds it (distil, fit, save, load), on the train split."""
    t0 = time.perf_counter()
    corpus = tower_corpus(flickr8k_train_captions(), load_class_names(), spans=spans)
    target_file = cache / f"static-targets-{len(corpus)}-s{spans}.npy"
    if target_file.is_file():
        targets = np.load(target_file)
    else:
        targets = np.concatenate([enc.encode(corpus[i:i + 128], normalize=True).numpy()
                                  for i in range(0, len(corpus), 128)])
        np.save(target_file, targets)
    path, fit = build_tower(enc, corpus, targets, cache / "models", epochs=epochs, info={})
    arm = load_static(path, enc.model_path / "tokenizer.json", identity=enc.identity)
    print(f"static: {len(corpus)} sentences, {epochs} epochs, loss {fit.losses}, ready in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    return arm, {"sentences": len(corpus), "epochs": epochs, "spans": spans, "loss": fit.losses}


def build_arms(enc: TextEncoder, cache: Path, *, static_epochs: int = 2, static_spans: int = 0) -> tuple[dict, dict]:
    """(arms by name, how the built ones were made: the static fit)."""
    arms: dict = {"torch": TorchTextEncoder(enc)}
    info: dict = {}
    for kind in ("onnx", "onnx-int8"):
        t0 = time.perf_counter()
        arm: OnnxTextEncoder = load_or_build_onnx(enc, cache / "models", kind=kind, threads=1)
        print(f"{kind}: {arm.path.name} ({arm.path.stat().st_size / 1e6:.1f} MB), ready in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        arms[kind] = arm
    arms["torch-int8"] = TorchInt8TextEncoder(enc)
    if static_epochs:
        arms["static"], info["static"] = build_static(enc, cache, epochs=static_epochs, spans=static_spans)
    return arms, info


def latency(arms: dict, queries: list[str], rounds: int) -> dict[str, dict[str, float]]:
    names = list(arms)
    per_round: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for arm in arms.values():  # warm each arm (first-call allocations)
        arm.encode(queries[:4])
    for r in range(rounds):
        times: dict[str, list[float]] = {n: [] for n in names}
        for i, q in enumerate(queries):
            shift = (i + r) % len(names)
            for n in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                arms[n].encode([q])
                times[n].append((time.perf_counter() - t0) * 1000)
        for n in names:
            per_round[n].append((statistics.median(times[n]), float(np.percentile(times[n], 90))))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {per_round[n][-1][0]:.2f} ms" for n in names), flush=True)
    return {n: {"median_ms": statistics.median(m for m, _ in v), "p90_ms": statistics.median(p for _, p in v),
                "round_medians_ms": [round(m, 3) for m, _ in v]} for n, v in per_round.items()}


def quality(arms: dict, sets: dict) -> dict[str, dict]:
    emb = JointEmbedder.from_checkpoint(SHIPPED, lambda texts: np.zeros((len(texts), 384), np.float32))
    out: dict[str, dict] = {}
    ref: dict[str, np.ndarray] = {}
    for name, arm in arms.items():
        out[name] = {}
        for set_name, s in sets.items():
            t0 = time.perf_counter()
            base = np.concatenate([arm.encode([t]) for t in s["texts"]])  # (C, 384), one query at a time
            wall = time.perf_counter() - t0
            ref.setdefault(set_name, base)
            with torch.no_grad():
                txt = emb.model.encode_text(torch.from_numpy(base)).numpy()
            img = emb.encode_features({"pooled": s["pooled"]})
            m = retrieval_metrics(img, txt, s["owner"])
            cos = (base * ref[set_name]).sum(1)
            out[name][set_name] = {"t2i_r1": m["t2i_r1"], "i2t_r1": m["i2t_r1"], "t2i_r10": m["t2i_r10"],
                                   "rsum": m["rsum"], "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                                   "cos_p01": float(np.percentile(cos, 1)), "encode_all_s": round(wall, 1)}
            print(f"{name} {set_name}: t2i R@1 {m['t2i_r1']:.2f} i2t R@1 {m['i2t_r1']:.2f} cos mean "
                  f"{cos.mean():.4f} min {cos.min():.4f} ({wall:.0f}s)", flush=True)
    return out


def static_text(res: dict) -> str:
    b = res.get("built", {}).get("static")
    if not b:
        return "not measured in this run (--static-epochs 0)."
    return (f"distilled from MiniLM with model2vec's recipe and fitted {b['epochs']} epochs on {b['sentences']:,} "
            f"sentences (Flickr8k train captions and ImageNet names, spans {b['spans']}; fit loss "
            f"{', '.join(f'{x:.4f}' for x in b['loss'])}), what `manage.py build_query_encoder` builds for a "
            "Flickr8k collection; served by model2vec's StaticModel.")


def markdown(res: dict, command: str) -> str:
    lat, q = res["latency"], res["quality"]
    ref = lat["torch"]["median_ms"]
    lines = [
        "## Query encoder: torch fp32 vs ONNX Runtime (fp32, dynamic int8) vs torch dynamic int8 vs a static "
        "tower",
        "",
        f"Measured {res['date']} by `{command}` on {res['machine']}. One query at a time on 1 thread; "
        f"{res['queries']} queries (half Flickr8k dev captions, half out-of-domain sentences) x {res['rounds']} "
        "rounds, arms interleaved query by query (order rotating); medians over rounds of per-round medians. "
        "R@1: the shipped embedding (models/embedding-open-vocab) with each arm's query vectors against the "
        "same image vectors; Flickr8k dev (1,000 images, 5,000 captions) and the out-of-domain dev set "
        f"({res['ood_images']} images, bench/build_ood_set.py). Gate: text->image R@1 within {GATE:g} point of "
        "torch fp32 on both. static: " + static_text(res),
        "",
        "<!-- summary -->",
        "| figure | measured | goal | met? | date | command |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    adopted = res["adopted"]
    a, t = q[adopted], q["torch"]
    for s, label in (("flickr8k_dev", "Flickr8k dev"), ("ood_dev", "out-of-domain dev")):
        d = a[s]["t2i_r1"] - t[s]["t2i_r1"]
        verdict = "met" if abs(d) <= GATE else f"**missed** by {abs(d) - GATE:.2f}"
        lines.append(f"| query encoder {adopted}: text->image R@1 change vs fp32, {label} | {d:+.2f} points "
                     f"({a[s]['t2i_r1']:.2f} vs {t[s]['t2i_r1']:.2f}) | within {GATE:g} point | "
                     f"{verdict} | {res['date']} | `{command}` |")
    if "static" in q and adopted != "static":
        for s, label in (("flickr8k_dev", "Flickr8k dev"), ("ood_dev", "out-of-domain dev")):
            d = q["static"][s]["t2i_r1"] - t[s]["t2i_r1"]
            verdict = "met" if abs(d) <= GATE else f"**missed** by {abs(d) - GATE:.2f}"
            lines.append(f"| query encoder static (not adopted unless both hold): text->image R@1 change vs fp32, "
                         f"{label} | {d:+.2f} points ({q['static'][s]['t2i_r1']:.2f} vs {t[s]['t2i_r1']:.2f}) | "
                         f"within {GATE:g} point | {verdict} | {res['date']} | `{command}` |")
    lines.append(f"| query encoder {adopted}: one-query encode, 1 thread (median) | {lat[adopted]['median_ms']:.2f} ms "
                 f"vs {ref:.2f} ms fp32 torch ({ref / lat[adopted]['median_ms']:.1f}x) | faster than fp32 | "
                 f"{'met' if lat[adopted]['median_ms'] < ref else '**missed**'} | {res['date']} | `{command}` |")
    lines += ["<!-- /summary -->", "",
              "| arm | one query, median ms | p90 ms | speed-up | cos vs fp32 mean / min (F8k) | "
              "F8k t2i R@1 | F8k i2t R@1 | OOD t2i R@1 | OOD i2t R@1 | OOD cos mean / min |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, v in lat.items():
        f, o = q[n]["flickr8k_dev"], q[n]["ood_dev"]
        lines.append(f"| {n} | {v['median_ms']:.2f} | {v['p90_ms']:.2f} | {ref / v['median_ms']:.2f}x | "
                     f"{f['cos_mean']:.4f} / {f['cos_min']:.4f} | {f['t2i_r1']:.2f} | {f['i2t_r1']:.2f} | "
                     f"{o['t2i_r1']:.2f} | {o['i2t_r1']:.2f} | {o['cos_mean']:.4f} / {o['cos_min']:.4f} |")
    lines += ["", "Per-round medians (ms): " + "; ".join(
        f"{n} {', '.join(f'{x:.2f}' for x in v['round_medians_ms'])}" for n, v in lat.items()),
        "", f"Adopted: `LOUPE_QUERY_ENCODER={adopted}` (the fastest arm whose R@1 holds the gate on both sets); "
        "search queries only, training and stored caption vectors keep fp32 (docs/deploy.md, \"Query encoder\").",
        ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--static-epochs", type=int, default=2, help="0: no static arm")
    ap.add_argument("--static-spans", type=int, default=0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sets = eval_sets(args.cache)
    enc = TextEncoder()
    arms, built = build_arms(enc, args.cache, static_epochs=args.static_epochs, static_spans=args.static_spans)
    half = args.queries // 2
    f8k = sets["flickr8k_dev"]["texts"][::5][:half]  # the first caption of each dev image
    queries = f8k + sets["ood_dev"]["texts"][: args.queries - len(f8k)]
    lat = latency(arms, queries, args.rounds)
    qual = quality(arms, sets)
    gate_ok = [n for n in arms if all(abs(qual[n][s]["t2i_r1"] - qual["torch"][s]["t2i_r1"]) <= GATE for s in sets)]
    adopted = min(gate_ok, key=lambda n: lat[n]["median_ms"])
    import platform
    res = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} thread, "
           f"torch {torch.__version__}", "rounds": args.rounds, "queries": len(queries),
           "ood_images": len(sets["ood_dev"]["texts"]), "latency": lat, "quality": qual, "adopted": adopted,
           "built": built}
    import onnxruntime
    res["machine"] += f", onnxruntime {onnxruntime.__version__}"
    print(json.dumps({n: round(v["median_ms"], 2) for n, v in lat.items()}), "adopted:", adopted)
    if args.write:
        command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/query_encoder.py --write"
        (RESULTS / "query_encoder.json").write_text(json.dumps(res, indent=1) + "\n")
        (RESULTS / "query_encoder.md").write_text(markdown(res, command))


if __name__ == "__main__":
    main()
