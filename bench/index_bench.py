"""Index benchmark: search/index (faiss) vs hnswlib vs exact search, at 100k and 1M vectors.

Vectors are normalised random mixtures of 2-3 "seed" vectors plus noise, so neighbours
share seeds without being near-copies. Seeds: --seed-vectors path.npy (N, D) when given
(e.g. real Flickr8k embeddings), else 8,000 vectors from a clustered Gaussian in d=512.

    .venv/bin/python bench/index_bench.py run --n 100000          # -> var/bench/index_100000.json
    .venv/bin/python bench/index_bench.py run --n 1000000 --runs 3
    .venv/bin/python bench/index_bench.py report                  # -> bench/results/index.md,
                                                                  #    bench/results/scaling.md, docs/img/
Measures, per N: build time, bytes per vector, recall@10 vs exact and queries/s (batch on
--threads threads, and one query at a time on one thread = per core), medians of --runs, for
"ours" (what build_index chooses by default at that size), the HNSW tier forced, hnswlib tuned
to our recall, compressed IVF-PQ shapes and exact search. Then ours and hnswlib are timed again
in alternation (--side-rounds): the ratios the goal is judged on, since both sides see the
same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.index import IndexConfig, build_index, normalise  # noqa: E402
from search.index import build as ib  # noqa: E402

RAW = ROOT / "var" / "bench"
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
K = 10


# ---- data -------------------------------------------------------------------------------
def seed_set(path: str | None, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if path:
        seeds = normalise(np.load(path))
        return seeds, f"real seed vectors from {path} ({seeds.shape[0]} x {seeds.shape[1]})"
    centres = rng.standard_normal((100, dim))  # 100 clusters of 80 seeds each
    seeds = centres[rng.integers(0, 100, 8000)] + 0.7 * rng.standard_normal((8000, dim))
    return normalise(seeds), f"synthetic: 8,000 seeds from a 100-cluster Gaussian in d={dim}"


def mixtures(seeds: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.35) -> np.ndarray:
    """(n, D) normalised mixtures of 2-3 random seeds (Dirichlet weights) plus Gaussian noise."""
    out = np.empty((n, seeds.shape[1]), np.float32)
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        pick = rng.integers(0, len(seeds), (m, 3))  # (m, 3)
        w = rng.dirichlet(np.ones(3), m)  # (m, 3)
        w[rng.random(m) < 0.5, 2] = 0.0  # half of them mix only 2 seeds
        x = np.einsum("mj,mjd->md", w, seeds[pick]) / np.linalg.norm(w, axis=1, keepdims=True)
        x += noise * rng.standard_normal(x.shape) / np.sqrt(seeds.shape[1])
        out[lo : lo + m] = normalise(x)
    return out


# ---- timing helpers ---------------------------------------------------------------------
def median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def qps(batch_fn: Callable[[np.ndarray], Any], single_fn: Callable[[np.ndarray], Any], xq: np.ndarray,
        runs: int, threads: int, set_threads: Callable[[int], None], singles: int = 200) -> dict[str, float]:
    set_threads(threads)
    batch = len(xq) / median_time(lambda: batch_fn(xq), runs)
    set_threads(1)
    one = xq[:singles]
    single = len(one) / median_time(lambda: [single_fn(q[None, :]) for q in one], runs)
    set_threads(threads)
    return {"qps_batch": batch, "qps_single_1core": single}


def recall(found: np.ndarray, gt: np.ndarray) -> float:
    return ib.recall_at_k(np.asarray(found), gt, K)


def file_bytes(write: Callable[[str], None], name: str) -> int:
    path = RAW / name
    write(str(path))
    size = path.stat().st_size
    path.unlink()
    return size


# ---- the contenders ---------------------------------------------------------------------
def bench_exact(xb: np.ndarray, xq: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    def numpy_knn(q: np.ndarray) -> np.ndarray:
        s = q @ xb.T  # (Q, N)
        top = np.argpartition(-s, K, axis=1)[:, :K]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), 1), 1)

    nq = xq[: args.exact_queries]
    res = {}
    seconds = median_time(lambda: [numpy_knn(nq[i:i + 50]) for i in range(0, len(nq), 50)], args.runs)
    res["numpy_exact"] = {"qps_batch": len(nq) / seconds, "recall": 1.0, "bytes_per_vector": 4 * xb.shape[1]}
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    res["faiss_flat"] = qps(lambda q: flat.search(q, K), lambda q: flat.search(q, K), nq, args.runs,
                            args.threads, faiss.omp_set_num_threads, singles=min(50, len(nq)))
    res["faiss_flat"].update(recall=1.0, bytes_per_vector=4 * xb.shape[1], build_s=0.0)
    return res


def bench_ours(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, args: argparse.Namespace,
               config: IndexConfig, label: str, keep: list | None = None) -> dict[str, Any]:
    ids = np.arange(len(xb), dtype=np.int64)
    t = time.perf_counter()
    index = build_index(xb, ids, model_version_id="bench", modality="image", config=config)
    build_s = time.perf_counter() - t
    raw, typ, params = index._index, index.index_type, index.params
    labels = index._labels  # faiss positions -> our ids (build_index adds the tuning sample last)

    def ours(q: np.ndarray) -> list:
        return index.search(q, K)

    def raw_search(q: np.ndarray, cand: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        # the faiss call under ours at the candidate's parameters (built per call, as ours does)
        return raw.search(q, K, params=ib.search_params(typ, cand, K, None))

    res = qps(ours, ours, xq, args.runs, args.threads, faiss.omp_set_num_threads)
    found = np.array([h.ids for h in index.search(xq, K)])
    index_bytes = file_bytes(lambda p: faiss.write_index(raw, p), "f.idx")
    res.update(kind=label, index_type=typ, params=params, build_s=build_s, recall=recall(found, gt),
               build_recall=index.recall, bytes_per_vector=index_bytes / len(xb))
    curve = []
    for cand in curve_candidates(typ, params)[: args.curve_points]:
        faiss.omp_set_num_threads(args.threads)
        r = recall(labels[raw_search(xq, cand)[1]], gt)
        seconds = median_time(partial(raw_search, xq, cand), args.runs)
        curve.append({"params": cand, "recall": r, "qps_batch": len(xq) / seconds})
        if r >= 0.999:
            break
    res["curve"] = curve
    if keep is not None:
        keep.append(index)
    # No `del index, raw` here: the closures above read both (a name deleted in this scope is
    # undefined for them), and both are freed when this function returns anyway.
    return res


def curve_candidates(typ: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    if typ == "hnsw":
        return [dict(params, efSearch=ef) for ef in EF_GRID]
    probes = sorted({2**i for i in range(int(np.log2(params["nlist"])) + 1)} | {params["nlist"]})
    return [dict(params, nprobe=p) for p in probes]  # k_factor stays at its tuned value


def bench_hnswlib(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, args: argparse.Namespace,
                  match: float | None = None, keep: list | None = None) -> dict[str, Any]:
    """hnswlib with our M / efConstruction; ef = the smallest integer whose recall on the bench
    queries reaches `match` (our index's recall on the same queries) or, without it, --target."""
    import hnswlib

    idx = hnswlib.Index(space="ip", dim=xb.shape[1])
    idx.init_index(max_elements=len(xb), ef_construction=args.ef_construction, M=args.m, random_seed=0)
    t = time.perf_counter()
    idx.add_items(xb, np.arange(len(xb)), num_threads=args.threads)
    build_s = time.perf_counter() - t
    goal = args.target if match is None else match
    curve, tuned, below = [], None, K - 1

    def recall_at(ef: int) -> float:
        idx.set_ef(ef)
        return recall(idx.knn_query(xq, k=K, num_threads=args.threads)[0], gt)

    for ef in EF_GRID:
        r = recall_at(ef)
        seconds = median_time(lambda: idx.knn_query(xq, k=K, num_threads=args.threads), args.runs)
        point = {"params": {"ef": ef}, "recall": r, "qps_batch": len(xq) / seconds}
        curve.append(point)
        if tuned is None and r >= goal:
            tuned = ef
        elif tuned is None:
            below = ef
        if r >= 0.999 or (tuned is not None and ef >= 4 * tuned):
            break
    while tuned is not None and tuned - below > 1:  # the smallest integer ef reaching the goal
        mid = (below + tuned) // 2
        if recall_at(mid) >= goal:
            tuned = mid
        else:
            below = mid
    idx.set_ef(tuned or EF_GRID[-1])
    res = qps(lambda q: idx.knn_query(q, k=K, num_threads=args.threads),
              lambda q: idx.knn_query(q, k=K, num_threads=1), xq, args.runs, args.threads, lambda n: None)
    r = recall(idx.knn_query(xq, k=K, num_threads=args.threads)[0], gt)
    res.update(kind="hnswlib", params={"M": args.m, "ef_construction": args.ef_construction, "ef": tuned},
               matched_to=goal,
               build_s=build_s, recall=r, curve=curve, version=_version("hnswlib"),
               bytes_per_vector=file_bytes(idx.save_index, "h.idx") / len(xb))
    if keep is not None:
        keep.append(idx)
    return res


def side_by_side(ours: Any, other: Any, xq: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Both indexes at their matched operating points, timed in alternation: each of --side-rounds
    rounds times ours (search/index, what the service calls), the raw faiss call under it
    (same parameters) and hnswlib, one query per call on one thread, then in one batch on
    --threads threads. The ratios are taken per round (same moment, same machine load), then
    their median: on a shared machine a separate run per contender compares two loads."""
    raw = ours._index
    params = ib.search_params(ours.index_type, ours.params, K, None)
    one = xq[: args.singles]
    contenders = {
        "ours": (lambda q: ours.search(q, K), lambda: ours.search(xq, K)),
        "raw_faiss": (lambda q: raw.search(q, K, params=params), lambda: raw.search(xq, K, params=params)),
        "hnswlib": (lambda q: other.knn_query(q, k=K, num_threads=1),
                    lambda: other.knn_query(xq, k=K, num_threads=args.threads)),
    }
    single: dict[str, list[float]] = {name: [] for name in contenders}
    batch: dict[str, list[float]] = {name: [] for name in contenders}
    for fs, _ in contenders.values():  # warm caches once
        fs(one[0][None, :])
    for _ in range(args.side_rounds):
        for name, (fs, fb) in contenders.items():
            faiss.omp_set_num_threads(1)
            t = time.perf_counter()
            for q in one:
                fs(q[None, :])
            single[name].append(len(one) / (time.perf_counter() - t))
            faiss.omp_set_num_threads(args.threads)
            t = time.perf_counter()
            fb()
            batch[name].append(len(xq) / (time.perf_counter() - t))

    def ratio(series: dict[str, list[float]], a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(series[a], series[b]))

    return {"rounds": args.side_rounds, "singles": len(one),
            "qps_single_1core": {k: statistics.median(v) for k, v in single.items()},
            "qps_batch": {k: statistics.median(v) for k, v in batch.items()},
            "ratio_single": {"ours/hnswlib": ratio(single, "ours", "hnswlib"),
                             "raw_faiss/hnswlib": ratio(single, "raw_faiss", "hnswlib"),
                             "ours/raw_faiss": ratio(single, "ours", "raw_faiss")},
            "ratio_batch": {"ours/hnswlib": ratio(batch, "ours", "hnswlib"),
                            "raw_faiss/hnswlib": ratio(batch, "raw_faiss", "hnswlib"),
                            "ours/raw_faiss": ratio(batch, "ours", "raw_faiss")}}


def _version(pkg: str) -> str:
    from importlib.metadata import version
    return version(pkg)


def run(args: argparse.Namespace) -> None:
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    seeds, seed_desc = seed_set(args.seed_vectors, args.dim, rng)
    t = time.perf_counter()
    xb, xq = mixtures(seeds, args.n, rng), mixtures(seeds, args.queries, rng)  # xq held out
    print(f"data {xb.shape} in {time.perf_counter() - t:.1f}s; {seed_desc}", flush=True)
    gt = ib.ground_truth(xq, xb, K)
    out: dict[str, Any] = {"n": args.n, "dim": xb.shape[1], "queries": len(xq), "seeds": seed_desc,
                           "threads": args.threads, "runs": args.runs, "argv": sys.argv,
                           "faiss": faiss.__version__, "numpy": np.__version__,
                           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), no GPU",
                           "loadavg_start": os.getloadavg()}
    RAW.mkdir(parents=True, exist_ok=True)
    path = RAW / f"index_{args.n}.json"
    if args.only_ivfpq:  # add IVF-PQ to an earlier run at this N (same data: same seed and sizes)
        earlier = json.loads(path.read_text()) if path.exists() else json.loads(
            (ROOT / "bench" / "results" / "index_raw.json").read_text())
        earlier = earlier if isinstance(earlier, dict) else next(r for r in earlier if r["n"] == args.n)
        out = {**earlier, "ivfpq_argv": sys.argv, "ivfpq_loadavg_start": os.getloadavg()}
    dump = lambda: path.write_text(json.dumps(out, indent=1, default=str))  # noqa: E731
    base = dict(flat_max=min(50_000, args.n - 1), hnsw_m=args.m, hnsw_ef_construction=args.ef_construction,
                recall_target=args.target)
    kept: list[Any] = []
    if not args.only_ivfpq:
        out.update(bench_exact(xb, xq, args))
        dump()  # after each contender, so a run cut short still leaves what it measured
        print("exact", out["numpy_exact"], out["faiss_flat"], flush=True)
        # "ours": what build_index chooses by default at this size (the product's index);
        # "ours_hnsw": the HNSW tier forced (hnsw_max = n), for the record.
        out["ours"] = bench_ours(xb, xq, gt, args, IndexConfig(**base), "ours (default choice)", keep=kept)
        print("ours", {k: v for k, v in out["ours"].items() if k != "curve"}, flush=True)
        dump()
        if not args.skip_forced_hnsw and out["ours"]["index_type"] != "hnsw":
            out["ours_hnsw"] = bench_ours(xb, xq, gt, args, IndexConfig(**base, hnsw_max=args.n), "ours (HNSW)")
            print("ours_hnsw", {k: v for k, v in out["ours_hnsw"].items() if k != "curve"}, flush=True)
            dump()
    if not args.skip_hnswlib and not args.only_ivfpq:
        out["hnswlib"] = bench_hnswlib(xb, xq, gt, args, match=out.get("ours", {}).get("recall"), keep=kept)
        print("hnswlib", {k: v for k, v in out["hnswlib"].items() if k != "curve"}, flush=True)
        dump()
        if args.side_rounds > 0:
            out["side_by_side"] = side_by_side(kept[0], kept[1], xq, args)
            print("side by side", out["side_by_side"], flush=True)
            dump()
    kept.clear()  # free both indexes before the compressed IVF-PQ builds
    for name, budget in (("ours_ivfpq_sq8", 700), ("ours_ivfpq", 100))[: args.ivfpq]:
        cfg = IndexConfig(**base, memory_budget_bytes=budget * args.n, ivf_nlist=args.nlist,
                          ivf_train_max=args.train_max)
        out[name] = bench_ours(xb, xq, gt, args, cfg, name)
        print(name, {k: v for k, v in out[name].items() if k != "curve"}, flush=True)
        dump()
    prefix = "ivfpq_" if args.only_ivfpq else ""  # keep the earlier run's own wall time and load
    out[prefix + "loadavg_end"] = os.getloadavg()
    out[prefix + "wall_s"] = time.perf_counter() - t
    out["complete"] = True
    dump()
    print(f"wrote {RAW / f'index_{args.n}.json'}")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--n", type=int, default=100_000)
    r.add_argument("--dim", type=int, default=512)
    r.add_argument("--queries", type=int, default=1000)
    r.add_argument("--exact-queries", type=int, default=200)
    r.add_argument("--runs", type=int, default=5)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--m", type=int, default=32)
    r.add_argument("--ef-construction", type=int, default=80)
    r.add_argument("--target", type=float, default=0.95)
    r.add_argument("--ivfpq", type=int, default=2, help="0: none, 1: IVF-PQ+SQ8 refine, 2: also plain IVF-PQ")
    r.add_argument("--nlist", type=int, default=None)
    r.add_argument("--train-max", type=int, default=100_000)
    r.add_argument("--curve-points", type=int, default=12)
    r.add_argument("--skip-hnswlib", action="store_true")
    r.add_argument("--skip-forced-hnsw", action="store_true", help="do not also build the HNSW tier")
    r.add_argument("--side-rounds", type=int, default=7,
                   help="rounds of the interleaved ours / raw faiss / hnswlib timing (0 = skip)")
    r.add_argument("--singles", type=int, default=200, help="single-query calls per contender per round")
    r.add_argument("--only-ivfpq", action="store_true",
                   help="measure only the IVF-PQ contenders and add them to the earlier run at this N")
    r.add_argument("--seed-vectors", default=None, help="(N, D) .npy of real vectors to mix")
    r.add_argument("--seed", type=int, default=0)
    sub.add_parser("report")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        from bench.index_report import report
        report(sorted(RAW.glob("index_*.json")))


if __name__ == "__main__":
    main()
