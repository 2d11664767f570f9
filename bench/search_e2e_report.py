"""The markdown report of bench/search_e2e.py (bench/results/search_e2e.md)."""
from __future__ import annotations

import os
import platform

def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.1f} ms"


SCENARIO_TEXT = {
    "distinct": "all-distinct queries: every request (warm-up, each round, the load phase) sends a caption text "
                "never sent before in this run (Flickr8k dev then train captions, deduplicated), so the "
                "query-vector cache cannot hit: the cost of a search that must encode its text",
    "repeat": "repeating queries (the original protocol): the same Flickr8k dev captions in every round and, "
              "in turn, under load; popular queries repeat in a real product, and here the per-worker "
              "query-vector cache serves most of them",
}


def _cache_line(cache: dict | None) -> str:
    if cache is None:
        return "query-vector cache: no stats logged (code without the cache)"
    total = cache["hits"] + cache["misses"]
    rate = cache["hits"] / total if total else 0.0
    return (f"query-vector cache (size {cache['size']} per worker, {cache['workers']} workers): "
            f"{cache['hits']:,} hits / {total:,} lookups = **hit rate {rate:.1%}** over the whole scenario "
            "(warm-up, side by side and load)")


def scenario_report(args, sc: dict) -> list[str]:
    sbs, load = sc["sbs"], sc["load"]
    m = sbs["median"]
    ratio = m["http_p50"] / m["inproc_p50"]
    worker = sc.get("worker", "sync")
    server = ("2 sync workers" if worker == "sync" else
              f"2 gthread workers x {worker.removeprefix('gthread')} threads, concurrent encodes batched")
    encoder = sc.get("encoder", "torch")
    rows = [f"#### Scenario `{sc['name']}`, server: {server}, query encoder `{encoder}`: "
            f"{SCENARIO_TEXT[sc['name']]}", "",
            f"- server ready (/readyz 200) {sc['ready_s']:.1f} s after start" if "ready_s" in sc else "",
            "- paired: this server ran at the same time as the other encoder's (same settings otherwise); each "
            "query went to both, the order alternating query by query; load phases alternated between the "
            "servers (A, B, B, A; searches, then the bare endpoint), half the load seconds each"
            if sc.get("paired") else "",
            f"- {_cache_line(sc['cache'])}", "",
            f"Latency, one client, measured side by side ({len(sbs['rounds'])} rounds of {args.queries} queries; "
            "each query over HTTP, then the same query in-process; medians over rounds of the per-round "
            "percentiles):", "",
            "| round | HTTP p50 | HTTP p95 | in-process p50 (encode + search) | in-process p95 | encode p50 | "
            "index search p50 |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(sbs["rounds"], 1):
        rows.append(f"| {i} | {ms(r['http_p50'])} | {ms(r['http_p95'])} | {ms(r['inproc_p50'])} | "
                    f"{ms(r['inproc_p95'])} | {ms(r['enc_p50'])} | {ms(r['idx_p50'])} |")
    rows.append(f"| **median** | **{ms(m['http_p50'])}** | **{ms(m['http_p95'])}** | **{ms(m['inproc_p50'])}** | "
                f"{ms(m['inproc_p95'])} | {ms(m['enc_p50'])} | {ms(m['idx_p50'])} |")
    verdict = "meets" if ratio <= 1.25 else "MISSES"
    rows += ["", f"HTTP statuses: {sbs['statuses']}. "
             f"**Ratio HTTP p50 / in-process p50 = {ratio:.2f}** (goal <= 1.25: {verdict}); "
             f"p95 ratio {m['http_p95'] / m['inproc_p95']:.2f}.", ""]
    ok = load["per_s"] >= 100 and load["p95"] is not None and load["p95"] <= 0.05
    wrapped = load["sent"] > load["pool"]
    rows += [f"Sustained: {load['clients']} concurrent keep-alive clients (Python threads in the bench process, "
             f"same machine) for {load['seconds']:.0f} s, load average at its start "
             + ", ".join(f"{x:.1f}" for x in sc["loadavg"]) + ":", "",
             f"- 200 responses: {load['ok']:,} of {load['requests']:,}; statuses {load['statuses']}; "
             f"connection errors {load['errors']}; {load['sent']:,} queries sent from a list of {load['pool']:,}"
             + (" (the list ran out and wrapped round: some queries repeated)" if wrapped and sc["name"] == "distinct"
                else ""),
             f"- **{load['per_s']:.1f} searches/s**, p50 {ms(load['p50'])}, **p95 {ms(load['p95'])}** "
             f"(goal >= 100/s and p95 <= 50 ms: {'meets' if ok else 'MISSES'})", ""]
    if "bare" in sc:
        bare = sc["bare"]
        p6 = load["per_s"] / bare["per_s"] if bare["per_s"] else 0.0
        rows += [f"- bare DRF endpoint, same server and clients, {bare['seconds']:.0f} s: "
                 f"{bare['per_s']:.1f} requests/s, p95 {ms(bare['p95'])}, statuses {bare['statuses']}; "
                 f"**P6 = {p6:.2f}** (searches/s / bare requests/s, goal >= 0.5: {'meets' if p6 >= 0.5 else 'MISSES'})",
                 ""]
    return rows


def _p1(sc: dict) -> float:
    m = sc["sbs"]["median"]
    return m["http_p50"] / m["inproc_p50"]


def comparison(scenarios: list[dict]) -> list[str]:
    """One row per (queries, server, encoder): medians over its fresh servers in this run."""
    import statistics
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for sc in scenarios:
        groups.setdefault((sc["name"], sc.get("worker", "sync"), sc.get("encoder", "torch")), []).append(sc)
    rows = ["#### Side by side: query encoders, medians over the fresh servers of this run", "",
            "| queries | server | query encoder | servers | HTTP p50 | in-process p50 (encode + search) | encode p50 | "
            "P1 ratio (goal <= 1.25) | searches/s, 20 clients | p95 under load | bare DRF req/s | "
            "P6 searches/s / bare (goal >= 0.5) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, worker, encoder), scs in groups.items():
        def bare(sc: dict) -> float:
            return sc["bare"]["per_s"] if "bare" in sc else float("nan")

        def p6(sc: dict) -> float:
            return sc["load"]["per_s"] / bare(sc) if bare(sc) else float("nan")

        pick = {"http": lambda sc: sc["sbs"]["median"]["http_p50"],
                "inproc": lambda sc: sc["sbs"]["median"]["inproc_p50"],
                "enc": lambda sc: sc["sbs"]["median"]["enc_p50"], "p1": _p1, "per_s": lambda sc: sc["load"]["per_s"],
                "p95": lambda sc: sc["load"]["p95"] or 0.0, "bare": bare, "p6": p6}
        med = {key: statistics.median(f(sc) for sc in scs) for key, f in pick.items()}
        rows.append(f"| {name} | {worker} | `{encoder}` | {len(scs)} | {ms(med['http'])} | {ms(med['inproc'])} | "
                    f"{ms(med['enc'])} | **{med['p1']:.2f}** | {med['per_s']:.1f} | {ms(med['p95'])} | "
                    f"{med['bare']:.1f} | **{med['p6']:.2f}** |")
    return rows + [""]


def report(args, info: dict, scenarios: list[dict], loads: list, cmd: str) -> str:
    rows = [f"### N = {args.n:,} images (ConSE v0, d = 384)", "",
            f"Command: `{cmd}`", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other agents, no GPU; "
            f"Python {platform.python_version()}; load average (1/5/15 min) before / after: "
            + " / ".join(", ".join(f"{x:.1f}" for x in la) for la in loads) + ".", "",
            f"Data: {info['count']:,} Image rows bulk-created WITHOUT image files (search responses never read "
            "the files), one public collection, anonymous requests; vectors are normalised Dirichlet mixtures of "
            f"2-3 of {info['seeds']} real ConSE v0 vectors of Flickr8k train images (from cached logits) plus "
            "noise (sigma 0.05 per dim). "
            f"Index built by `search.services.index_rebuild`: {info['index_type']}, build-time recall@10 "
            f"{info['recall']:.4f}; rows inserted in {info['rows_s']:.0f} s, "
            f"index built in {info['index_s']:.0f} s.", "",
            f"Server: gunicorn, 2 workers (sync, or gthread where the scenario says), DEBUG=false, 127.0.0.1, "
            "PostgreSQL, THROTTLE_* raised to "
            f"1000000/min and counted in the cache at {os.environ.get('CACHE_URL', 'locmem')}, a fresh server per "
            f"scenario. k = {args.k}.", ""]
    if any("encoder" in sc for sc in scenarios):
        rows += comparison(scenarios)
    for sc in scenarios:
        rows += scenario_report(args, sc)
    return "\n".join(rows)
