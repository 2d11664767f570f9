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
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
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
    _version, generator = runtime.active_captioner()
    pooled = torch.zeros(1, 1280)
    spatial = torch.zeros(1, 49, 1280) if generator.needs_spatial else None
    generator.caption(pooled, spatial)


def _image_encoder() -> None:
    runtime.image_features([PILImage.fromarray(np.zeros((224, 224, 3), np.uint8))])


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
    out.append(("image encoder", _image_encoder))
    out.append(("captioner", _captioner))
    return out


def warm_up(role: str = "web") -> dict[str, Any]:
    """Run every step now (each failure logged and skipped); returns the final state."""
    with _lock:
        _state.update(status="warming", steps={}, started_at=time.time(), seconds=None)
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
    logger.info("warm-up (%s) finished in %.1fs", role, time.monotonic() - t0)
    return state()


def warm_up_in_background(role: str = "web") -> threading.Thread:
    """Start warm-up in a daemon thread; /readyz says "warming" until it ends."""
    with _lock:
        _state.update(status="warming", steps={}, started_at=time.time(), seconds=None)
    thread = threading.Thread(target=warm_up, args=(role,), name=f"loupe-warm-up-{role}", daemon=True)
    thread.start()
    return thread
