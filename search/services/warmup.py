"""Warm starts: load what the first request would otherwise load, when a process starts.

A web process (project/wsgi.py) or a worker (project/celery.py) calls `warm_up_in_background`
once; /readyz answers 503 "warming" until it has finished, so a load balancer (or `make run`'s
user) never sends the first search to a cold process. Each step goes through the same code a
request uses, so whatever a request would load lazily is loaded here:

- the active embedding's text tower, with one query encoded through the query path (web; the
  query encoder, LOUPE_QUERY_ENCODER, is built or loaded here) or one caption text through the
  fp32 encoder that stored vectors use (workers);
- its image and caption indexes, into the served-index registry;
- the ConSE class vectors (zero-shot labels on the image page);
- the active captioner, with one decode;
- the image encoder, with one forward (uploads, query-by-image, the caption page).

A step that fails (no model yet, an index being rebuilt) is logged and skipped: the request that
needs it loads it lazily, exactly as without warm-up. Warm-up never blocks readiness for longer
than it runs.

Under gunicorn every worker of one master (LOUPE_WARM_GROUP, set in project/gunicorn.conf.py)
writes its state to VAR_DIR/run/warm/<master>/<pid>, and `group_status` is "ready" only when
LOUPE_WARM_EXPECTED live workers are: a load balancer never sends a search to a cold sibling of
the worker that answered /readyz.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from PIL import Image as PILImage

from embeddings import runtime
from embeddings.models import ModelVersion
from search.selectors import CAPTION, IMAGE

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, Any] = {"status": "cold", "steps": {}, "started_at": None, "seconds": None}


def state() -> dict[str, Any]:
    """{"status": cold | warming | ready, "steps": {name: "ok 0.41s" | "skipped: why"}, "seconds"}."""
    with _lock:
        return {**_state, "steps": dict(_state["steps"])}


def reset() -> None:
    with _lock:
        _state.update(status="cold", steps={}, started_at=None, seconds=None)


def _group_dir() -> Path | None:
    group = os.environ.get("LOUPE_WARM_GROUP", "")
    return Path(settings.VAR_DIR) / "run" / "warm" / group if group.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(status: str) -> None:
    """This process's status, for its siblings' /readyz (atomic: write then rename)."""
    folder = _group_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"status": status, "at": time.time()}))
        tmp.replace(folder / str(os.getpid()))
    except OSError as exc:  # readiness then rests on this process alone
        logger.warning("warm-up state not shared: %s", exc)


def group_status() -> str:
    """warming | ready | cold: this process's status, or (under gunicorn) its whole group's."""
    mine = state()["status"]
    folder = _group_dir()
    if folder is None or mine == "cold":
        return mine
    expected = int(os.environ.get("LOUPE_WARM_EXPECTED", "1") or 1)
    ready = 0
    for entry in folder.iterdir() if folder.is_dir() else []:
        if not entry.name.isdigit() or not _alive(int(entry.name)):
            continue
        try:
            status = json.loads(entry.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if status == "warming":
            return "warming"
        ready += status == "ready"
    return "ready" if mine == "ready" and ready >= expected else "warming"


def _text_query(version: ModelVersion) -> None:
    from search.services.queries import QueryTerm, query_encode

    query_encode(version=version, terms=[QueryTerm(text="a photo")])  # builds/loads the query encoder


def _caption_text(version: ModelVersion) -> None:
    # workers encode captions (stored vectors) with the fp32 encoder, never the query encoder
    runtime.embedder_for(version).encode_texts(["a photo"])


def _indexes(version: ModelVersion) -> None:
    from search.services.indexes import index_for_search

    for modality in (IMAGE, CAPTION):
        index_for_search(version=version, modality=modality)


def _captioner() -> None:
    version, generator = runtime.active_captioner()
    pooled = torch.zeros(1, 1280)
    cells = runtime.feature_fields(runtime.image_encoder_name(version))["spatial"][0]
    spatial = torch.zeros(1, cells, 1280) if generator.needs_spatial else None
    generator.caption(pooled, spatial)


def _image_encoders() -> None:
    """The image encoders the active embedding and captioner versions are fed by (Lite0 when
    none is active: uploads are encoded with it)."""
    names = {runtime.image_encoder_name(v) for v in (runtime.active_version(ModelVersion.Kind.EMBEDDING),
                                                     runtime.active_version(ModelVersion.Kind.CAPTIONER))
             if v is not None} or {runtime.LITE0}
    for name in sorted(names):
        runtime.image_features([PILImage.fromarray(np.zeros((224, 224, 3), np.uint8))], name)


def steps(role: str) -> list[tuple[str, Callable[[], Any]]]:
    """What a process of this role loads, in order (web: everything a page or search touches;
    worker: what encoding and captioning tasks touch)."""
    version = runtime.active_version(ModelVersion.Kind.EMBEDDING)
    out: list[tuple[str, Callable[[], Any]]] = []
    if version is not None:
        if role == "web":
            out.append(("text query", lambda: _text_query(version)))
        else:
            out.append(("caption text", lambda: _caption_text(version)))
        if role == "web":
            out.append(("indexes", lambda: _indexes(version)))
            out.append(("conse class vectors", runtime.conse_class_vectors))
    out.append(("image encoder", _image_encoders))
    out.append(("captioner", _captioner))
    return out


def warm_up(role: str = "web") -> dict[str, Any]:
    """Run every step now (each failure logged and skipped); returns the final state."""
    with _lock:
        _state.update(status="warming", steps={}, started_at=time.time(), seconds=None)
    _publish("warming")
    t0 = time.monotonic()
    try:
        todo = steps(role)
    except Exception as exc:  # e.g. the database is not migrated yet: nothing to warm
        logger.warning("warm-up (%s) skipped: %s", role, exc)
        todo = []
    for name, step in todo:
        started = time.monotonic()
        try:
            step()
            outcome = f"ok {time.monotonic() - started:.2f}s"
        except Exception as exc:  # a cold path stays lazy; the request that needs it says what is wrong
            outcome = f"skipped: {type(exc).__name__}: {exc}"[:300]
        with _lock:
            _state["steps"][name] = outcome
        logger.info("warm-up (%s): %s %s", role, name, outcome)
    with _lock:
        _state.update(status="ready", seconds=round(time.monotonic() - t0, 2))
    _publish("ready")
    logger.info("warm-up (%s) finished in %.1fs", role, time.monotonic() - t0)
    return state()


def warm_up_in_background(role: str = "web") -> threading.Thread:
    """Start warm-up in a daemon thread; /readyz says "warming" until it ends."""
    with _lock:
        _state.update(status="warming", steps={}, started_at=time.time(), seconds=None)
    _publish("warming")
    thread = threading.Thread(target=warm_up, args=(role,), name=f"loupe-warm-up-{role}", daemon=True)
    thread.start()
    return thread


def on_worker_start(sender: Any = None, **_kwargs: Any) -> None:
    """Celery worker_init / worker_process_init (connected in SearchConfig.ready): a worker that
    runs tasks (solo, or each prefork child; not a prefork parent) warms up in the background."""
    pool = getattr(sender, "pool_cls", "")  # worker_init: a name ("solo") or the class; children: no sender
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if settings.LOUPE_WARM_START and "prefork" not in name:
        warm_up_in_background("worker")
