"""Thread counts per process role, applied by every entry point.

On a shared CPU, torch's default (one intra-op thread per core in every process) makes web
processes and workers fight over the same cores: an in-process API text search measured
166-337 ms per query with 2 threads against 28-38 ms with 1 on a busy 2-core machine
(docs/deploy.md, "Threads"). So:

- web processes (gunicorn, runserver) use LOUPE_WEB_THREADS (default 1): one request is one
  small matrix product, and concurrency comes from processes and threads of the server;
- Celery workers use LOUPE_WORKER_THREADS (default: the cores divided among the worker
  processes of this host, LOUPE_WORKER_PROCESSES, at least 1);
- management commands (train, evaluate, import) use LOUPE_COMMAND_THREADS (default: the
  worker count).

`pin(role)` sets torch's intra-op threads, FAISS's OpenMP threads, and OMP/MKL/OpenBLAS
variables for child processes (torchrun ranks, the METEOR JVM's BLAS-free anyway).
"""
from __future__ import annotations

import os
import sys

ROLES = ("web", "worker", "command")
_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_for(role: str) -> int:
    from django.conf import settings

    if role not in ROLES:
        raise ValueError(f"unknown process role {role!r}; one of {ROLES}")
    if role == "web":
        return max(1, int(settings.LOUPE_WEB_THREADS))
    worker = int(settings.LOUPE_WORKER_THREADS) or max(
        1, (os.cpu_count() or 1) // max(1, int(settings.LOUPE_WORKER_PROCESSES)))
    if role == "worker":
        return max(1, worker)
    return max(1, int(settings.LOUPE_COMMAND_THREADS) or worker)


def pin(role: str) -> int:
    """Apply the role's thread count to this process (and its future children); the count."""
    n = threads_for(role)
    for var in _VARS:
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    os.environ["LOUPE_PROCESS_ROLE"] = role
    return n
