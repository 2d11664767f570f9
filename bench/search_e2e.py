"""End-to-end search benchmark (issue 6): GET /api/v1/search/ through a real gunicorn server on
PostgreSQL, against the in-process cost of the same queries (text encoding + raw index search).

What it does, in one run (every figure in the report comes from this run):
1. creates a throwaway PostgreSQL database (`--db`, dropped at the end) and a var dir under
   var/bench/e2e (MEDIA/INDEX/MODEL), migrates it;
2. bulk-creates N Image rows (status ready, public collection) WITHOUT real files: search
   responses only read the rows, never the files; thumbnails are not fetched;
3. stores one vector per image for the active ConSE v0 version (384-d): a normalised random
   mixture of 2-3 real ConSE image vectors plus noise; the real seeds are ConSE vectors of
   Flickr8k train images encoded from their cached logits (var/cache/flickr8k);
4. builds the index with the project's service (search.services.index_rebuild);
5. starts gunicorn (2 sync workers, DEBUG=false, 127.0.0.1, throttles raised via env and counted
   in Redis, the deployment's cache: CACHE_URL, default redis://127.0.0.1:6379/12);
6. per scenario (`--scenarios`), on a fresh server: R rounds of Q queries, interleaved query by
   query: HTTP p50/p95 vs the in-process encode_texts + VectorIndex.search of the same query
   (same version, same index file); then sustained load: C concurrent keep-alive clients for
   S seconds; searches/s and p95. Scenario `distinct`: every request a caption text never sent
   before (the query-vector cache cannot hit); `repeat`: the same Q dev captions every round
   and under load (the original protocol). Each worker logs its cache hits at exit
   (bench/search_e2e_gunicorn.py), and the report gives the measured hit rate.
7. P6 (issue 15): right after the search load, the same C clients for S seconds against a bare
   DRF endpoint (an APIView returning {"ok": true} with the project's default authentication,
   permission and throttle classes, added to the URLs by bench/search_e2e_gunicorn.py only; the
   product has no such endpoint) on the same server: searches/s / bare requests/s.

A scenario may name the query encoder the server uses (LOUPE_QUERY_ENCODER): "distinct@torch",
"distinct:gthread4@onnx-int8"; the in-process reference then uses the same query encoder
(runtime.query_embedder_for), so the ratio compares like with like. Repeat specs (ABBA order) to
get medians of several fresh servers in one run.

Usage: .venv/bin/python bench/search_e2e.py --n 100000 --queries 200 --rounds 3 --clients 20 --seconds 30
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_e2e_client import (  # noqa: E402  (sibling script modules)
    BARE, Server, get, pct, side_by_side, sustained, merged, public,
)
from search_e2e_report import SCENARIO_TEXT, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PY = str(REPO / ".venv" / "bin" / "python")
CACHE = REPO / "var" / "cache" / "flickr8k"


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True)


def bench_env(db: str, var: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TEST_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "false", "LOUPE_VAR_DIR": str(var),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}", "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1", "THROTTLE_SEARCH": "1000000/min", "THROTTLE_ANON": "1000000/min",
        "THROTTLE_USER": "1000000/min", "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # one thread per gunicorn worker: 2 workers on 2 cores
        # the deployment's cache (deploy/loupe.env.example): throttle counters live in Redis
        "CACHE_URL": os.environ.get("CACHE_URL", "redis://127.0.0.1:6379/12"),
    })
    return env


def seed_vectors(embedder, n_seeds: int) -> np.ndarray:
    """(S, 384) real ConSE image vectors of Flickr8k train images, from cached logits."""
    from embeddings.ml.feature_cache import FeatureCache
    manifest = json.loads((CACHE / "manifest.json").read_text())
    cache = FeatureCache(str(CACHE / "image" / "orig"), encoder_identity=manifest["image_encoder_identity"])
    present = set(cache.keys())  # the first n_seeds train images the cache holds (all of them once complete)
    keys = [k for k in manifest["splits"]["train"] if k in present][:n_seeds]
    if len(keys) < n_seeds:
        raise SystemExit(f"only {len(keys)} train images in {CACHE}; run bench/cache_flickr8k.py")
    logits = cache.get(keys, fields=["logits"], dtype=np.float32)["logits"]  # (S, 1000)
    return embedder.encode_features({"logits": logits})  # (S, 384) unit rows


def mixtures(seeds: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """(n, D) unit vectors: Dirichlet mixtures of 2-3 random seeds plus Gaussian noise."""
    d = seeds.shape[1]
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        picks = rng.integers(0, len(seeds), size=(m, 3))  # (m, 3)
        w = rng.dirichlet([1.0, 1.0, 1.0], size=m).astype(np.float32)  # (m, 3)
        w[rng.random(m) < 0.5, 2] = 0.0  # half use 2 seeds
        x = np.einsum("mk,mkd->md", w, seeds[picks]) + noise * rng.standard_normal((m, d)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def populate(n: int, n_seeds: int, seed: int) -> dict:
    """Collection, n Image rows, n vectors of the active ConSE version; index built by the service."""
    from django.contrib.auth import get_user_model
    from embeddings import runtime
    from embeddings.models import Collection, Image, ImageEmbedding, ModelVersion
    from search.services import index_rebuild
    version = ModelVersion.objects.get(kind="embedding", status="active")
    assert version.family == "conse" and version.dim == 384, (version.family, version.dim)
    embedder = runtime.embedder_for(version)
    seeds = seed_vectors(embedder, n_seeds)
    vecs = mixtures(seeds, n, np.random.default_rng(seed))
    owner = get_user_model().objects.create_user("bench-owner")
    coll = Collection.objects.create(name="bench", owner=owner, is_public=True)
    t1 = time.perf_counter()
    batch = 5000
    for start in range(0, n, batch):
        rows = [Image(collection=coll, file=f"images/bench-{i}.jpg", sha256=f"{i:064x}", width=224, height=224,
                      format="JPEG", size_bytes=1, source_name=f"bench-{i}.jpg", status="ready", created_by=owner)
                for i in range(start, min(n, start + batch))]
        Image.objects.bulk_create(rows, batch_size=batch)  # PostgreSQL returns the pks
        ImageEmbedding.objects.bulk_create(
            [ImageEmbedding(image_id=img.pk, model_version=version, vector=vecs[start + j].astype("<f4").tobytes())
             for j, img in enumerate(rows)], batch_size=batch)
    t2 = time.perf_counter()
    record = index_rebuild(version=version, modality="image")
    t3 = time.perf_counter()
    return {"version": version.pk, "seeds": len(seeds), "rows_s": t2 - t1, "index_s": t3 - t2,
            "index_type": record.index_type, "count": record.count, "recall": record.recall_at_10}


def side_by_side_pair(hosts: dict[str, str], version_id: int, warm: list[str], per_round: list[list[str]],
                      k: int) -> dict[str, dict]:
    """side_by_side for two servers at once (one per query encoder): each query goes to both, in an
    order that alternates query by query, each HTTP request followed by the same query in-process
    with that server's encoder, so the machine's load hits both encoders alike."""
    from django.test import override_settings

    from embeddings import runtime
    from embeddings.models import ModelVersion
    from search.services import index_for_search
    version = ModelVersion.objects.get(pk=version_id)
    embedders = {}
    for enc in hosts:
        with override_settings(LOUPE_QUERY_ENCODER=enc):
            embedders[enc] = runtime.query_embedder_for(version)
    index = index_for_search(version=version, modality="image")
    conns = {enc: http.client.HTTPConnection(host, timeout=60) for enc, host in hosts.items()}
    names = list(hosts)
    for q in warm:
        for enc in names:
            get(conns[enc], f"/api/v1/search/?k={k}&q=" + urllib.parse.quote_plus(q))
            index.search(embedders[enc].encode_texts([q]), k)
    out: dict[str, dict] = {enc: {"rounds": [], "statuses": {}} for enc in names}
    for queries in per_round:
        t: dict[str, dict[str, list[float]]] = {enc: {"http": [], "enc": [], "idx": []} for enc in names}
        for i, q in enumerate(queries):
            for enc in (names if i % 2 == 0 else names[::-1]):
                status, _, dt = get(conns[enc], f"/api/v1/search/?k={k}&q=" + urllib.parse.quote_plus(q))
                out[enc]["statuses"][status] = out[enc]["statuses"].get(status, 0) + 1
                t0 = time.perf_counter()
                vec = embedders[enc].encode_texts([q])
                t1 = time.perf_counter()
                index.search(vec, k)
                t2 = time.perf_counter()
                t[enc]["http"].append(dt)
                t[enc]["enc"].append(t1 - t0)
                t[enc]["idx"].append(t2 - t1)
        for enc in names:
            h, e, x = t[enc]["http"], t[enc]["enc"], t[enc]["idx"]
            inproc = [a + b for a, b in zip(e, x)]
            out[enc]["rounds"].append({"http_p50": pct(h, .5), "http_p95": pct(h, .95), "enc_p50": pct(e, .5),
                                       "idx_p50": pct(x, .5), "inproc_p50": pct(inproc, .5),
                                       "inproc_p95": pct(inproc, .95)})
    for enc in names:
        rounds = out[enc]["rounds"]
        out[enc]["median"] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        out[enc]["index_type"] = index.index_type
    return out


def run_pair(env: dict[str, str], var: Path, spec: str, encoders: list[str], version_id: int, args) -> list[dict]:
    """`spec` ("distinct:gthread4") on two fresh servers at once, one per query encoder: latency
    side by side query by query, then load phases alternating between the servers (A, B, B, A for
    searches, then the same for the bare endpoint), S/2 seconds each, both servers fed the same
    texts in the same order."""
    name, _, worker = spec.partition(":")
    worker = worker or "sync"
    if name != "distinct":
        raise SystemExit("--pair supports the distinct scenario only")
    pool = distinct_pool()
    used = 20 + args.rounds * args.queries
    warm, load_q = pool[:20], pool[used:]
    rounds = [pool[20 + r * args.queries:20 + (r + 1) * args.queries] for r in range(args.rounds)]
    threads = int(worker.removeprefix("gthread")) if worker.startswith("gthread") else 0
    stamp = time.monotonic_ns()
    a, b = encoders
    started = time.perf_counter()
    with Server({**env, "LOUPE_QUERY_ENCODER": a}, var / f"gunicorn-{name}-{worker}-{a}-{stamp}.log", threads) as sa, \
            Server({**env, "LOUPE_QUERY_ENCODER": b}, var / f"gunicorn-{name}-{worker}-{b}-{stamp}.log", threads) as sb:
        ready_s = time.perf_counter() - started
        servers = {a: sa, b: sb}
        sbs = side_by_side_pair({e: s.host for e, s in servers.items()}, version_id, warm, rounds, args.k)
        for e in encoders:
            print(spec, e, "side by side", sbs[e]["median"], flush=True)
        load_before = os.getloadavg()
        phases: dict[tuple[str, str], list[dict]] = {}
        offset = {a: 0, b: 0}
        for kind in ("search", "bare"):
            for e in (a, b, b, a):
                qs = load_q[offset[e]:] + load_q[:offset[e]]
                res = sustained(servers[e].host, qs, args.clients, args.seconds / 2, args.k,
                                path=BARE if kind == "bare" else None)
                if kind == "search":
                    offset[e] += res["sent"]  # the next phase of this server sends texts it has not seen
                phases.setdefault((e, kind), []).append(res)
                print(spec, e, kind, public(res), flush=True)
    out = []
    for e in encoders:
        out.append({"name": name, "worker": worker, "encoder": e, "sbs": sbs[e], "paired": True,
                    "load": merged(phases[(e, "search")]), "bare": merged(phases[(e, "bare")]),
                    "cache": servers[e].cache_stats(), "loadavg": load_before, "ready_s": ready_s})
    return out


def dev_queries(n: int) -> list[str]:
    manifest = json.loads((CACHE / "manifest.json").read_text())
    dev = manifest["splits"]["dev"]
    step = max(1, len(dev) // n)
    return [manifest["captions"][f][i % 5][1] for i, f in enumerate(dev[::step][:n])]


def distinct_pool() -> list[str]:
    """Every Flickr8k dev caption, then every train caption, each text once after the service's
    own cleaning (white space folded), shuffled with a fixed seed: a query never repeats."""
    from search.services.queries import clean_text
    manifest = json.loads((CACHE / "manifest.json").read_text())
    seen: dict[str, None] = {}
    for split in ("dev", "train"):
        block = [clean_text(c) for f in manifest["splits"][split] for _, c in manifest["captions"][f]]
        np.random.default_rng(1).shuffle(block)
        seen.update(dict.fromkeys(t for t in block if t not in seen))
    return list(seen)


def run_scenario(env: dict[str, str], var: Path, spec: str, version_id: int, args) -> dict:
    """One fresh server: side by side, then sustained load; queries repeating or all distinct.
    `spec` is a scenario name, optionally with the server kind and the query encoder: "distinct",
    "distinct:gthread8", "distinct:gthread4@onnx-int8"."""
    spec, _, encoder = spec.partition("@")
    encoder = encoder or "torch"
    name, _, worker = spec.partition(":")
    worker = worker or "sync"
    if name == "repeat":  # the original protocol: the same 200 dev captions every round and under load
        queries = dev_queries(args.queries)
        warm, rounds, load_q = queries[:20], [queries] * args.rounds, queries
    else:  # every request a text never sent before in this run, so the query cache can never hit
        pool = distinct_pool()
        used = 20 + args.rounds * args.queries
        warm = pool[:20]
        rounds = [pool[20 + r * args.queries:20 + (r + 1) * args.queries] for r in range(args.rounds)]
        load_q = pool[used:]
    threads = int(worker.removeprefix("gthread")) if worker.startswith("gthread") else 0
    log = var / f"gunicorn-{name}-{worker}-{encoder}-{time.monotonic_ns()}.log"
    started = time.perf_counter()
    with Server({**env, "LOUPE_QUERY_ENCODER": encoder}, log, threads) as server:
        ready_s = time.perf_counter() - started
        sbs = side_by_side(server.host, version_id, warm, rounds, args.k, encoder)
        print(spec, encoder, "side by side", sbs["median"], flush=True)
        load_before = os.getloadavg()
        load = sustained(server.host, load_q, args.clients, args.seconds, args.k)
        print(spec, encoder, "sustained", public(load), flush=True)
        bare = sustained(server.host, load_q, args.clients, args.seconds, args.k, path=BARE)
        print(spec, encoder, "bare", public(bare), flush=True)
        load, bare = public(load), public(bare)
    return {"name": name, "worker": worker, "encoder": encoder, "sbs": sbs, "load": load, "bare": bare,
            "cache": server.cache_stats(), "loadavg": load_before, "ready_s": ready_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, default=400)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--scenarios", default="distinct,repeat",
                    help="comma list of: distinct, repeat; each optionally :sync (default) or :gthreadN "
                         "(2 gthread workers with N threads each) and @ENCODER (LOUPE_QUERY_ENCODER, default "
                         "torch), e.g. distinct@torch,distinct:gthread4@onnx-int8")
    ap.add_argument("--pair", default="",
                    help="two query encoders, e.g. torch,onnx-int8: each scenario (without @) runs on two "
                         "servers at once, one per encoder, interleaved query by query (run_pair)")
    ap.add_argument("--static-tower", type=Path, default=REPO / "var" / "bench" / "query-encoder" / "models",
                    help="folder holding the static tower (bench/query_encoder.py builds one there), copied "
                         "into the servers' MODEL_DIR when an encoder is static")
    ap.add_argument("--db", default="loupe_bench")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "search_e2e.md"))
    args = ap.parse_args()
    names = [x for x in args.scenarios.split(",") if x]
    encoders = ("torch", "onnx", "onnx-int8", "torch-int8", "static")

    def valid(spec: str) -> bool:
        scenario, _, encoder = spec.partition("@")
        name, _, worker = scenario.partition(":")
        return (name in SCENARIO_TEXT and encoder in ("", *encoders)
                and (worker in ("", "sync") or worker.removeprefix("gthread").isdigit()))

    bad = [x for x in names if not valid(x)]
    if not names or bad:
        ap.error(f"--scenarios: choose from {sorted(SCENARIO_TEXT)}")
    cmd = ".venv/bin/python bench/search_e2e.py " + " ".join(sys.argv[1:])
    var = REPO / "var" / "bench" / "e2e"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    env = bench_env(args.db, var)
    if "static" in args.pair or "@static" in args.scenarios:
        towers = sorted(args.static_tower.glob("minilm-static-v*.safetensors*"))
        if not towers:
            raise SystemExit(f"no static tower in {args.static_tower}: run bench/query_encoder.py first")
        (var / "models" / "query-encoders").mkdir(parents=True)
        for f in towers:
            shutil.copy2(f, var / "models" / "query-encoders" / f.name)
    loads = [os.getloadavg()]
    psql(f"DROP DATABASE IF EXISTS {args.db}")
    psql(f"CREATE DATABASE {args.db}")
    try:
        subprocess.run([PY, "manage.py", "migrate", "--no-input", "-v0"], cwd=REPO, env=env, check=True)
        os.environ.update(env)
        import django
        django.setup()
        import torch
        torch.set_num_threads(1)
        info = populate(args.n, args.seeds, seed=0)
        print("populated", info, flush=True)
        from django.db import connections
        connections.close_all()
        pair = [e for e in args.pair.split(",") if e]
        if pair and (len(pair) != 2 or not set(pair) <= set(encoders) or any("@" in n for n in names)):
            raise SystemExit("--pair takes two query encoders, and scenarios without @ENCODER")
        if pair:
            scenarios = [sc for name in names for sc in run_pair(env, var, name, pair, info["version"], args)]
        else:
            scenarios = [run_scenario(env, var, name, info["version"], args) for name in names]
        loads.append(os.getloadavg())
        text = report(args, info, scenarios, loads, cmd)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(text + "\n")
        print(text)
    finally:
        from django.db import connections
        connections.close_all()
        psql(f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)")
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
