"""Turn var/bench/index_*.json (bench/index_bench.py run) into markdown and a plot.

    .venv/bin/python bench/index_bench.py report

Writes bench/results/index.md, bench/results/scaling.md and docs/img/index_recall_qps.png.
Extrapolations in scaling.md are formulas applied to the measured 1M row, printed with them.
"""

from __future__ import annotations

import json
import math
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PLOT = ROOT / "docs" / "img" / "index_recall_qps.png"
BOOKKEEPING = 9  # bytes per vector the wrapper keeps beside faiss: int64 key + alive flag
ROWS = (("ours", "ours, default choice (build_index)"), ("ours_hnsw", "ours: HNSW tier forced (faiss IndexHNSWFlat)"),
        ("hnswlib", "hnswlib HNSW"),
        ("ours_ivfpq_sq8", "ours: IVF-PQ + SQ8 refine"), ("ours_ivfpq", "ours: IVF-PQ"),
        ("faiss_flat", "faiss IndexFlatIP (exact)"), ("numpy_exact", "numpy matmul (exact)"))


def _fmt(x: Any, nd: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _params(r: dict[str, Any]) -> str:
    p = r.get("params") or {}
    keep = ("M", "efConstruction", "efSearch", "ef_construction", "ef", "nlist", "pq_m", "nprobe", "k_factor")
    return ", ".join(f"{k}={p[k]}" for k in keep if k in p)


def _match_rule(other: dict) -> str:
    if "matched_to" in other:  # runs from 2026-11-25 (late) on: matched to our recall, integer ef
        return (f"same M and efConstruction as our HNSW tier; the smallest integer ef whose recall on the bench "
                f"queries reaches ours, {other['matched_to']:.4f}")
    return "the smallest grid ef reaching 0.95 on the bench queries themselves"


def _table(d: dict[str, Any]) -> list[str]:
    lines = [f"| index | params | recall@10 | QPS batch ({d['threads']} thr) | QPS 1 query/call, 1 core | build s "
             "| bytes/vector |", "|---|---|---|---|---|---|---|"]
    for key, name in ROWS:
        if key not in d:
            continue
        r = d[key]
        lines.append(f"| {name} | {_params(r)} | {_fmt(r.get('recall'), 4)} | {_fmt(r.get('qps_batch'))} | "
                     f"{_fmt(r.get('qps_single_1core'))} | {_fmt(r.get('build_s'), 1)} | "
                     f"{_fmt(r.get('bytes_per_vector'), 1)} |")
    return lines


def _at_target(curve: list[dict[str, Any]], target: float = 0.95) -> dict[str, Any] | None:
    ok = [c for c in curve if c["recall"] >= target]
    return max(ok, key=lambda c: c["qps_batch"]) if ok else None


def index_md(data: list[dict[str, Any]]) -> str:
    out = ["## Vector index: search/index vs hnswlib vs exact", ""]
    d0 = data[0]
    out += [f"Machine: {d0['machine']}; faiss {d0['faiss']}, hnswlib {d0.get('hnswlib', {}).get('version', '-')}, "
            f"numpy {d0['numpy']}, matplotlib {version('matplotlib')}. faiss and hnswlib both limited to "
            f"{d0['threads']} threads. Timings are medians of `--runs` repeats (below); builds ran once.", "",
            f"Data: {d0['seeds']}; each vector a normalised Dirichlet mixture of 2-3 seeds plus noise; "
            f"{d0['queries']} held-out queries from the same process; recall@10 = |found top-10 ∩ exact top-10| / 10.",
            "Exact QPS is measured on the first 200 queries. \"QPS 1 query/call, 1 core\" loops over 200 "
            "single-query calls on one thread (the web-request shape; per-core throughput).", ""]
    for d in data:
        load = ""
        if "loadavg_start" in d:
            end = d.get("loadavg_end", [float("nan")])[0]
            load = (f" Load average (1 min) at start / end: {d['loadavg_start'][0]:.1f} / {end:.1f} "
                    f"on {d['machine'].split(',')[1].strip().split()[0]} cores "
                    "(any other work on the machine shared the CPU).")
        partial = "" if d.get("complete") else (
            " **Partial run: stopped before every contender was measured (session time); "
            "rows below are all it measured.**")
        out += [f"### N = {d['n']:,} (d = {d['dim']}, runs = {d['runs']})", "",
                (f"Wall time {d['wall_s']:,.0f} s." if "wall_s" in d else "Wall time not recorded.")
                + f"{load}{partial}", "",
                f"Command: `.venv/bin/python {' '.join(d['argv'])}`", ""]
        if "ivfpq_argv" in d:  # IVF-PQ rows added by a later --only-ivfpq run on the same data
            out += [f"The IVF-PQ rows come from a later run on the same data (same seed and sizes): "
                    f"`.venv/bin/python {' '.join(d['ivfpq_argv'])}`; wall {d['ivfpq_wall_s']:,.0f} s, load average "
                    f"{d['ivfpq_loadavg_start'][0]:.1f} / {d['ivfpq_loadavg_end'][0]:.1f}, "
                    "timings from the --runs it was given.", ""]
        out += _table(d) + [""]
        # runs before 2026-12-01: HNSW was the choice
        ours, other = d.get("ours") or d.get("ours_hnsw"), d.get("hnswlib")
        if ours and other:
            rule = ("; since 2026-11-25 (late): grid, then bisection, and the 95% lower bound of the mean must "
                    "reach the target" if "matched_to" in other else "; coarse grid, mean at the target")
            out.append(f"Operating points: ours ({ours.get('index_type', 'hnsw')}) {_params(ours)} "
                       "(chosen by build_index's own tuning on "
                       f"{ours.get('tune_queries', 500)} vectors held out of the index{rule}) gives recall "
                       f"{ours['recall']:.4f} on the bench queries; hnswlib ef={other['params']['ef']} "
                       f"({_match_rule(other)}) gives {other['recall']:.4f}. "
                       f"QPS ratio ours/hnswlib: batch {ours['qps_batch'] / other['qps_batch']:.2f}x, "
                       f"single-query 1-core {ours['qps_single_1core'] / other['qps_single_1core']:.2f}x. "
                       f"Build-time recall recorded in our manifest: "
                       f"{_fmt(ours.get('build_recall'), 4)}.")
            sbs = d.get("side_by_side")
            if sbs:
                rs, rb = sbs["ratio_single"], sbs["ratio_batch"]
                qs, qb = sbs["qps_single_1core"], sbs["qps_batch"]
                out.append("")
                out.append("**Side by side** (the same two indexes at these operating points, timed in alternation "
                           "over "
                           f"{sbs['rounds']} rounds; each ratio is the median of the per-round ratios, so both sides "
                           f"saw the same machine load): ours / hnswlib single-query 1-core "
                           f"**{rs['ours/hnswlib']:.2f}x** ({qs['ours']:,.0f} vs {qs['hnswlib']:,.0f} QPS), batch "
                           f"**{rb['ours/hnswlib']:.2f}x** ({qb['ours']:,.0f} vs {qb['hnswlib']:,.0f} QPS). The raw "
                           f"faiss call under our wrapper: {rs['raw_faiss/hnswlib']:.2f}x single, "
                           f"{rb['raw_faiss/hnswlib']:.2f}x batch of hnswlib; our wrapper keeps "
                           f"{rs['ours/raw_faiss']:.2f}x (single) / {rb['ours/raw_faiss']:.2f}x (batch) of the raw "
                           "call's QPS. The table's QPS columns above come from separate timings per contender.")
            a, b = _at_target(ours["curve"]), _at_target(other["curve"])
            if a and b:
                out.append("Best batch QPS on the curves at recall >= 0.95: "
                           f"raw faiss ({ours.get('index_type', 'hnsw')}) "
                           f"{a['qps_batch']:,.0f} ({_params(a)}, recall {a['recall']:.4f}) vs hnswlib "
                           f"{b['qps_batch']:,.0f} (ef={b['params']['ef']}, recall {b['recall']:.4f}): "
                           f"{a['qps_batch'] / b['qps_batch']:.2f}x.")
            forced = d.get("ours_hnsw") if "ours" in d else None
            c = _at_target(forced["curve"]) if forced else None
            if c and b:
                out.append(f"The HNSW tier (forced, for the record): best batch QPS at recall >= 0.95 on its curve "
                           f"{c['qps_batch']:,.0f} ({_params(c)}, recall {c['recall']:.4f}) = "
                           f"{c['qps_batch'] / b['qps_batch']:.2f}x hnswlib's; its own tuned point: "
                           f"{_params(forced)}, recall {forced['recall']:.4f}, {forced['qps_single_1core']:,.0f} "
                           f"single-query QPS, built in {forced['build_s']:,.1f} s.")
            out.append("")
        if "faiss_flat" in d and ours:
            out.append(f"Ours vs exact faiss Flat, batch: {ours['qps_batch'] / d['faiss_flat']['qps_batch']:.1f}x; "
                       "faiss Flat vs numpy matmul: "
                       f"{d['faiss_flat']['qps_batch'] / d['numpy_exact']['qps_batch']:.2f}x.")
            out.append("")
        out += ["Recall / QPS curves (batch):", "", "| index | params | recall@10 | QPS |", "|---|---|---|---|"]
        for key in ("ours", "ours_hnsw", "hnswlib", "ours_ivfpq_sq8", "ours_ivfpq"):
            for c in d.get(key, {}).get("curve", []):
                out.append(f"| {key} | {_params(c)} | {c['recall']:.4f} | {c['qps_batch']:,.0f} |")
        out.append("")
    out.append(f"Plot: `docs/img/{PLOT.name}`; latency against N: `docs/img/latency_vs_n.png` (bench/plots.py).")
    return "\n".join(out) + "\n"


def plot(data: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4.5), squeeze=False)
    for ax, d in zip(axes[0], data):
        for key, name in ROWS:
            r = d.get(key)
            if not r:
                continue
            if r.get("curve"):
                ax.plot([c["recall"] for c in r["curve"]], [c["qps_batch"] for c in r["curve"]], "o-", label=name, ms=3)
            else:
                ax.plot([r["recall"]], [r["qps_batch"]], "s", label=name)
        ax.axvline(0.95, color="grey", ls=":", lw=1)
        ax.set(xlabel="recall@10 vs exact", ylabel=f"queries/s (batch, {d['threads']} threads)", yscale="log",
               title=f"N = {d['n']:,}, d = {d['dim']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


KINDS = [("faiss_flat", "Flat"), ("ours", "IVF-PQ fast-scan + exact re-rank (default)"), ("ours_hnsw", "HNSW"),
         ("ours_ivfpq_sq8", "IVF-PQ + SQ8 refine"), ("ours_ivfpq", "IVF-PQ")]


def _largest(data: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The run with the largest N that measured `key` (a 1M run may have been cut short)."""
    runs = [d for d in data if key in d]
    return max(runs, key=lambda d: d["n"]) if runs else None


def _extrapolate(key: str, r: dict[str, Any], n0: int, n: int) -> tuple[float, float]:
    """(QPS per core, build seconds) at n from the row measured at n0; formulas in scaling_md."""
    f, q = n / n0, r["qps_single_1core"]
    if key == "faiss_flat":
        return q / f, 0.0
    if key == "ours_hnsw":
        return q * math.log(n0) / math.log(n), r["build_s"] * f * math.log(n) / math.log(n0)
    return q * math.sqrt(1 / f), r["build_s"] * f ** 1.5  # upper bound: training included


def scaling_md(data: list[dict[str, Any]]) -> str:
    big = max(data, key=lambda d: d["n"])
    out = ["## Scaling the index (measured, then extrapolated)", "",
           f"Measured on {big['machine']}, d = {big['dim']}, synthetic vectors ({big['seeds']}). Each row uses the "
           "largest N at which that index was measured (N0). QPS per core = one query per call on one thread. "
           f"Bytes/vector = faiss file size / N + {BOOKKEEPING} B of wrapper bookkeeping (int64 key + alive flag). "
           "The CPU was shared with other jobs (load averages in index.md), so QPS and build times are pessimistic "
           "and noisy.", "",
           "| index | N0 | params | recall@10 | bytes/vector | build s | QPS per core |",
           "|---|---|---|---|---|---|---|"]
    rows = []
    for key, name in KINDS:
        d = _largest(data, key)
        if d is not None:
            r = d[key]
            rows.append((key, name, d["n"], r))
            out.append(f"| {name} | {d['n']:,} | {_params(r)} | {r['recall']:.4f} | "
                       f"{r['bytes_per_vector'] + BOOKKEEPING:,.0f} | {r['build_s']:,.0f} | "
                       f"{r['qps_single_1core']:,.1f} |")
    hnsw = sorted((d for d in data if "ours_hnsw" in d), key=lambda d: d["n"])
    exp = ""
    if len(hnsw) >= 2:
        lo, hi = hnsw[0], hnsw[-1]
        e = math.log(hi["ours_hnsw"]["build_s"] / lo["ours_hnsw"]["build_s"]) / math.log(hi["n"] / lo["n"])
        exp = f" Measured HNSW build growth between {lo['n']:,} and {hi['n']:,}: t ~ N^{e:.2f}."
    out += ["", "Formulas (N0 and the measured values from the table above):", "",
            "- memory(N) = N x bytes/vector (each structure's per-vector cost is constant; "
            "IVF adds nlist x d x 4 B of centroids).",
            "- Flat: QPS(N) = QPS(N0) x N0 / N (a full scan); build ~ 0.",
            "- HNSW: QPS(N) ~ QPS(N0) x ln N0 / ln N (greedy search depth grows with log N; optimistic, as efSearch "
            "for a fixed recall also creeps up); build(N) = build(N0) x (N / N0) x ln N / ln N0." + exp,
            "- IVF-PQ with nlist ~ 4 sqrt(N) and fixed nprobe: a query scans nlist centroids + nprobe N / nlist codes, "
            "both ~ sqrt(N): QPS(N) = QPS(N0) x sqrt(N0 / N); add time ~ N x nlist ~ N^1.5. The build column applies "
            "(N / N0)^1.5 to the whole measured build, training included, although training runs on a "
            "fixed-size sample: "
            "an upper bound (the bench does not time training and adding separately).",
            "", "| index | N | memory | build (1 machine, 2 cores) | QPS per core |", "|---|---|---|---|---|"]
    for n in (100_000_000, 1_000_000_000):
        for key, name, n0, r in rows:
            qn, bn = _extrapolate(key, r, n0, n)
            mem = n * (r["bytes_per_vector"] + BOOKKEEPING)
            out.append(f"| {name} | {n:,} | {mem / 2**30:,.0f} GiB | {_dur(bn)} | {qn:,.2f} |")
    out += ["", "Reading: at 100M an HNSW over float32 d=512 (~2.3 KB/vector) no longer fits one ordinary machine's "
            "RAM; IVF-PQ (sharded, with the SQ8 refine codes on a second tier or dropped) is the path to 1B, at the "
            "recall cost shown above for plain IVF-PQ. Build times this long mean building on many cores / GPUs "
            "(faiss-gpu IVF training and adding) or sharding the build. The 100M / 1B rows are extrapolations, "
            "not measurements."]
    return "\n".join(out) + "\n"


def _dur(s: float) -> str:
    if s < 1:
        return "~0"
    for unit, div in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= div:
            return f"{s / div:,.1f} {unit}"
    return f"{s:.0f} s"


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    # Runs before the rename stored the exact-numpy row under "numpy", over the version string.
    if isinstance(d.get("numpy"), dict):
        d["numpy_exact"] = d.pop("numpy")
        d["numpy"] = version("numpy")  # same .venv; the run itself did not record it
    return d


def report(paths: list[Path]) -> None:
    data = sorted((_upgrade(json.loads(p.read_text())) for p in paths), key=lambda d: d["n"])
    if not data:
        raise SystemExit("no var/bench/index_*.json: run `bench/index_bench.py run` first")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "index.md").write_text(index_md(data))
    (RESULTS / "scaling.md").write_text(scaling_md(data))
    (RESULTS / "index_raw.json").write_text(json.dumps(data, indent=1))
    plot(data)
    print(f"wrote {RESULTS / 'index.md'}, {RESULTS / 'scaling.md'}, {PLOT}")
