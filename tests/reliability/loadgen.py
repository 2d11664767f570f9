"""Load against a real stack (issue 7, case 24): gunicorn + a Celery worker + the database and
broker named by an environment, N concurrent clients mixing text searches and uploads, and an
index rebuild (a swap of the served FAISS file) half-way through.

Used by tests/reliability/test_load.py (short runs in `make test`) and bench/load_test.py (the
60-second runs in `make bench`). Loopback only; every phase has a deadline. Plain stdlib HTTP
(one keep-alive connection per client thread), so the client adds no dependency.
"""
from __future__ import annotations

import http.client
import io
import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)
WORDS = ["dog", "cat", "beach", "red", "car", "tree", "child", "ball", "water", "grass", "snow", "man", "bike"]


# --- processes ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def django_call(env: dict[str, str], code: str, timeout: float = 300) -> Any:
    """Run `code` in a fresh Django process with `env`; it must print one JSON line last."""
    script = "import django, json\ndjango.setup()\n" + code
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"django_call failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


class Stack:
    """gunicorn and one Celery worker, started with `env`, logs under `log_dir`."""

    def __init__(self, env: dict[str, str], log_dir: Path, web_workers: int = 2, threads: int = 4) -> None:
        self.env, self.log_dir = env, log_dir
        self.port = free_port()
        self.base = f"127.0.0.1:{self.port}"
        self.web_args = [sys.executable, "-m", "gunicorn", "project.wsgi:application", "-b", self.base,
                         "-w", str(web_workers), "--threads", str(threads), "--timeout", "120",
                         "--graceful-timeout", "10"]
        self.worker_args = [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "default,gpu,bulk",
                            "--pool=solo", "--concurrency=1", "--loglevel=INFO", "--without-gossip",
                            "--without-mingle", "--without-heartbeat"]
        self.procs: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._start(self.worker_args, "worker")
        self._start(self.web_args, "web")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a server process exited early:\n{self.logs()[-4000:]}")
            ready = "ready." in self.log("worker")
            try:
                conn = http.client.HTTPConnection(self.base, timeout=5)
                conn.request("GET", "/healthz")
                up = conn.getresponse().status == 200
                conn.close()
            except OSError:
                up = False
            if up and ready:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"stack did not come up:\n{self.logs()[-4000:]}")

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return self.log("web") + "\n" + self.log("worker")


# --- data -----------------------------------------------------------------------------------
SETUP = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from embeddings.models import Collection, ModelVersion
n, fake = {n}, {fake}
if fake:  # the fake 16-d model of tests.reliability.faultapp
    ModelVersion.objects.filter(kind="embedding", status="active").update(status="retired")
    ModelVersion.objects.create(kind="embedding", name="fake", family="fake", status="active", dim=16)
users = []
for i in range(n):
    user = get_user_model().objects.create_user(f"load-{{i}}-{tag}")
    Collection.objects.create(name=f"load-{{i}}-{tag}", owner=user, is_public=(i % 2 == 0))
    users.append({{"token": Token.objects.create(user=user).key, "collection": f"load-{{i}}-{tag}"}})
version = ModelVersion.objects.get(kind="embedding", status="active")
print(json.dumps({{"users": users, "version": version.pk}}))
"""

VERIFY = """
from embeddings.models import Image, ImageEmbedding
ids, version = {ids}, {version}
images = dict(Image.objects.filter(pk__in=ids).values_list("pk", "status"))
vectors = set(ImageEmbedding.objects.filter(image_id__in=ids, model_version_id=version)
              .values_list("image_id", flat=True))
print(json.dumps({{"found": len(images), "ready": sum(s == "ready" for s in images.values()),
                  "failed": sorted(p for p, s in images.items() if s == "failed"),
                  "with_vector": len(vectors), "missing": sorted(set(ids) - set(images)),
                  "without_vector": sorted(set(images) - vectors)}}))
"""


def setup_users(env: dict[str, str], n: int, fake: bool) -> dict[str, Any]:
    return django_call(env, SETUP.format(n=n, fake=fake, tag=uuid.uuid4().hex[:6]))


def verify_uploads(env: dict[str, str], ids: list[int], version: int, timeout: float) -> dict[str, Any]:
    """Wait until every uploaded image is processed; report what has a vector."""
    deadline = time.monotonic() + timeout
    while True:
        state = django_call(env, VERIFY.format(ids=sorted(ids), version=version))
        done = state["ready"] + len(state["failed"]) == len(ids) == state["found"]
        if done or time.monotonic() > deadline:
            return state
        time.sleep(2)


def jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (64, 48), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rng.randrange(64), rng.randrange(48)
        img.putpixel((x, y), tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# --- clients --------------------------------------------------------------------------------
@dataclass
class LoadResult:
    clients: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)  # (kind, status) -> n
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"search": [], "upload": []})
    errors: list[str] = field(default_factory=list)  # connection errors, timeouts
    uploaded: list[int] = field(default_factory=list)  # ids from 201 responses
    swap: dict[str, Any] = field(default_factory=dict)

    def count(self, kind: str | None = None, lo: int = 0, hi: int = 999) -> int:
        return sum(n for (k, s), n in self.statuses.items() if (kind is None or k == kind) and lo <= s <= hi)

    def percentile(self, kind: str, q: float) -> float | None:
        values = sorted(self.latencies[kind])
        if not values:
            return None
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Client(threading.Thread):
    def __init__(self, base: str, user: dict[str, str], index: int, until: list[float], upload_share: float,
                 result: LoadResult, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.base, self.user, self.index, self.until = base, user, index, until
        self.upload_share, self.result, self.lock = upload_share, result, lock
        self.rng = random.Random(index)
        self.conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        headers = {"Authorization": f"Token {self.user['token']}", "Connection": "keep-alive"}
        if ctype:
            headers["Content-Type"] = ctype
        for attempt in (1, 2):  # a keep-alive connection the server closed is reopened once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.base, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        n = 0
        while time.monotonic() < self.until[0]:  # a list: run_load may extend it
            n += 1
            upload = self.rng.random() < self.upload_share
            started = time.perf_counter()
            try:
                if upload:
                    body, ctype = multipart({"collection": self.user["collection"]}, "file", f"c{self.index}-{n}.jpg",
                                            jpeg(self.index * 1_000_000 + n))
                    status, data = self._request("POST", "/api/v1/images/", body, ctype)
                else:
                    q = " ".join(self.rng.sample(WORDS, 2)).replace(" ", "+")
                    status, data = self._request("GET", f"/api/v1/search/?q={q}&k=10")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.result.errors.append(f"{type(exc).__name__}: {exc}")
                self.conn = None
                continue
            elapsed = time.perf_counter() - started
            kind = "upload" if upload else "search"
            with self.lock:
                self.result.statuses[(kind, status)] += 1
                self.result.latencies[kind].append(elapsed)
                if upload and status == 201:
                    self.result.uploaded.append(json.loads(data)["id"])


def run_load(stack: Stack, users: list[dict[str, str]], seconds: float, upload_share: float = 0.3,
             swap_env: dict[str, str] | None = None) -> LoadResult:
    """`len(users)` clients for `seconds`, while `manage.py build_index --modality image`
    rebuilds and swaps the served index. The swap starts with the clients (a Django process
    takes seconds to start); if it ends late, the clients keep going until 2 s after it, so the
    swap always happens under load."""
    result, lock = LoadResult(clients=len(users), seconds=seconds), threading.Lock()
    t0 = time.monotonic()
    deadline = [t0 + seconds]
    clients = [Client(stack.base, user, i, deadline, upload_share, result, lock) for i, user in enumerate(users)]
    swap = None
    if swap_env is not None:
        swap = subprocess.Popen([sys.executable, "manage.py", "build_index", "--modality", "image"], cwd=REPO,
                                env=swap_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for client in clients:
        client.start()
    if swap is not None:
        output, _ = swap.communicate(timeout=600)
        ended = time.monotonic()
        deadline[0] = max(deadline[0], ended + 2)
        result.swap = {"returncode": swap.returncode, "ended_at": ended - t0, "output": output[-2000:]}
    for client in clients:
        client.join(seconds + 600)
    result.seconds = time.monotonic() - t0
    return result


def warm_up(stack: Stack, env: dict[str, str], users: list[dict[str, str]], version: int,
            per_client: int = 1) -> float:
    """Seed: each client uploads `per_client` images; once they are encoded the index is built
    and each client searches once (models load now, not in the timed run). Returns seconds."""
    started = time.perf_counter()
    result, lock = LoadResult(clients=len(users), seconds=0), threading.Lock()
    clients = [Client(stack.base, user, 10_000 + i, [0.0], 1.0, result, lock) for i, user in enumerate(users)]
    ids = []
    for i, client in enumerate(clients):
        for n in range(per_client):
            body, ctype = multipart({"collection": client.user["collection"]}, "file", "seed.jpg",
                                    jpeg(-(i * 100 + n) - 1))
            status, data = client._request("POST", "/api/v1/images/", body, ctype)
            if status not in (200, 201):
                raise RuntimeError(f"warm-up upload answered {status}: {data[:300]!r}")
            ids.append(json.loads(data)["id"])
    state = verify_uploads(env, ids, version, timeout=600)
    if state["with_vector"] != len(ids):
        raise RuntimeError(f"warm-up images not encoded: {state}")
    built = manage(env, "build_index")
    if built.returncode != 0:
        raise RuntimeError(f"build_index failed: {built.stderr[-2000:]}")
    for client in clients:
        status, data = client._request("GET", "/api/v1/search/?q=a+dog&k=5")
        if status != 200:
            raise RuntimeError(f"warm-up search answered {status}: {data[:300]!r}")
    return time.perf_counter() - started


def problems_in_logs(stack: Stack) -> list[str]:
    """Log lines that mean trouble: tracebacks, 5xx, SQLite lock errors."""
    bad = ("database is locked", "Traceback", "Internal Server Error", "[CRITICAL]", "WORKER TIMEOUT")
    return [line for line in stack.logs().splitlines() if any(b in line for b in bad)]


def markdown(title: str, command: str, result: LoadResult, verify: dict[str, Any], extra: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 1000:.0f} ms"

    rows = [f"### {title}", "", f"Command: `{command}`", ""]
    rows += [f"- {k}: {v}" for k, v in extra.items()]
    total = result.count()
    rows += [
        f"- clients: {result.clients}, duration: {result.seconds:.0f} s, requests: {total} "
        f"({total / result.seconds:.1f}/s)",
        f"- searches: {result.count('search')} (2xx {result.count('search', 200, 299)}, "
        f"429 {result.count('search', 429, 429)}, 5xx {result.count('search', 500, 599)}), "
        f"p50 {ms(result.percentile('search', 0.5))}, p95 {ms(result.percentile('search', 0.95))}",
        f"- uploads: {result.count('upload')} (201 {result.count('upload', 201, 201)}, "
        f"429 {result.count('upload', 429, 429)}, 5xx {result.count('upload', 500, 599)}), "
        f"p50 {ms(result.percentile('upload', 0.5))}, p95 {ms(result.percentile('upload', 0.95))}",
        f"- connection errors: {len(result.errors)}",
        f"- index swap under load: `build_index --modality image` (a separate process) started with the "
        f"clients, exit {result.swap.get('returncode')}, done at {result.swap.get('ended_at', 0):.1f} s",
        f"- uploads afterwards: {verify['found']} of {len(result.uploaded)} stored, {verify['ready']} ready, "
        f"{verify['with_vector']} with a vector, failed {len(verify['failed'])}",
        "",
    ]
    return "\n".join(rows)


__all__ = ["Stack", "LoadResult", "run_load", "warm_up", "setup_users", "verify_uploads", "problems_in_logs",
           "markdown", "manage", "django_call", "free_port"]
