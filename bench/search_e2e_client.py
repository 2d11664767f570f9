"""The HTTP side of bench/search_e2e.py: a bench gunicorn server, timed GETs, and the
side-by-side and closed-loop measurements it reports (split out to keep that script readable)."""
from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BARE = "/api/v1/bench/bare/"  # added by bench/search_e2e_gunicorn.py in each worker


class Server:
    def __init__(self, env: dict[str, str], log: Path, threads: int = 0) -> None:
        """threads = 0: 2 sync workers (one request at a time each); > 0: 2 gthread workers with
        that many request threads each (concurrent text encodes are batched, SEARCH_ENCODE_BATCH)."""
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.args = [PY, "-m", "gunicorn", "project.wsgi:application", "-b", self.host, "-w", "2",
                     "--timeout", "120", "--graceful-timeout", "10", "--keep-alive", "30",
                     "-c", str(REPO / "bench" / "search_e2e_gunicorn.py")]  # logs query-cache stats at exit
        if threads:
            self.args += ["--worker-class", "gthread", "--threads", str(threads)]
        self.env, self.log = env, log

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.log.read_text()[-3000:])
            try:
                c = http.client.HTTPConnection(self.host, timeout=5)
                c.request("GET", "/readyz")  # 503 "warming" until the warm start has loaded the models
                resp = c.getresponse()
                resp.read()
                if resp.status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("gunicorn did not come up")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cache_stats(self) -> dict | None:
        """Query-vector cache hits / misses summed over the workers (each logs them at exit)."""
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.startswith("QUERY_CACHE_STATS ")]
        if not lines:
            return None
        stats = [json.loads(ln.split(" ", 1)[1]) for ln in lines]
        return {"workers": len(stats), "hits": sum(x["hits"] for x in stats), "misses": sum(x["misses"] for x in stats),
                "size": stats[0]["size"]}


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes, float]:
    t = time.perf_counter()
    conn.request("GET", path, headers={"Connection": "keep-alive"})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, body, time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def side_by_side(host: str, version_id: int, warm: list[str], per_round: list[list[str]], k: int,
                 encoder: str) -> dict:
    """Per round: each query over HTTP, then the same query in-process (encode + raw index search),
    the in-process encode through the query encoder the server uses."""
    from django.test import override_settings

    from embeddings import runtime
    from embeddings.models import ModelVersion
    from search.services import index_for_search
    version = ModelVersion.objects.get(pk=version_id)
    with override_settings(LOUPE_QUERY_ENCODER=encoder):
        embedder = runtime.query_embedder_for(version)
    index = index_for_search(version=version, modality="image")
    conn = http.client.HTTPConnection(host, timeout=60)
    for q in warm:  # warm both workers and this process (models, caches)
        get(conn, f"/api/v1/search/?k={k}&q=" + urllib.parse.quote_plus(q))
        index.search(embedder.encode_texts([q]), k)
    rounds_out = []
    statuses: dict[int, int] = {}
    for queries in per_round:
        http_t, enc_t, idx_t = [], [], []
        for q in queries:
            status, _, dt = get(conn, f"/api/v1/search/?k={k}&q=" + urllib.parse.quote_plus(q))
            statuses[status] = statuses.get(status, 0) + 1
            http_t.append(dt)
            t = time.perf_counter()
            vec = embedder.encode_texts([q])  # (1, 384)
            t2 = time.perf_counter()
            index.search(vec, k)
            t3 = time.perf_counter()
            enc_t.append(t2 - t)
            idx_t.append(t3 - t2)
        inproc = [a + b for a, b in zip(enc_t, idx_t)]
        rounds_out.append({"http_p50": pct(http_t, .5), "http_p95": pct(http_t, .95), "enc_p50": pct(enc_t, .5),
                           "idx_p50": pct(idx_t, .5), "inproc_p50": pct(inproc, .5), "inproc_p95": pct(inproc, .95)})
    med = {key: statistics.median(r[key] for r in rounds_out) for key in rounds_out[0]}
    return {"rounds": rounds_out, "median": med, "statuses": statuses, "index_type": index.index_type}


def sustained(host: str, queries: list[str], clients: int, seconds: float, k: int, path: str | None = None) -> dict:
    """C clients take the next query of `queries` in turn (wrapping round when it runs out); with
    `path`, they all GET that path instead (the bare endpoint)."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    turn = [0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, timeout=120)
        while time.monotonic() < stop:
            with lock:
                q = queries[turn[0] % len(queries)]
                turn[0] += 1
            try:
                status, _, dt = get(conn, path or f"/api/v1/search/?k={k}&q=" + urllib.parse.quote_plus(q))
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(host, timeout=120)
                continue
            with lock:
                lat.append(dt)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = statuses.get(200, 0)
    return {"clients": clients, "seconds": wall, "requests": len(lat), "ok": ok, "per_s": ok / wall,
            "p50": pct(lat, .5) if lat else None, "p95": pct(lat, .95) if lat else None,
            "statuses": statuses, "errors": len(errors), "sent": turn[0], "pool": len(queries), "_lat": lat}


def merged(parts: list[dict]) -> dict:
    """One load figure from several phases of the same kind (their requests and seconds summed)."""
    lat = [x for p in parts for x in p["_lat"]]
    ok, wall = sum(p["ok"] for p in parts), sum(p["seconds"] for p in parts)
    statuses: dict[int, int] = {}
    for p in parts:
        for code, n in p["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return {"clients": parts[0]["clients"], "seconds": wall, "requests": len(lat), "ok": ok, "per_s": ok / wall,
            "p50": pct(lat, .5) if lat else None, "p95": pct(lat, .95) if lat else None, "statuses": statuses,
            "errors": sum(p["errors"] for p in parts), "sent": sum(p["sent"] for p in parts),
            "pool": parts[0]["pool"], "phases": len(parts)}


def public(load: dict) -> dict:
    return {k: v for k, v in load.items() if not k.startswith("_")}
