"""Per-process registry of served FAISS indexes, keyed by (model version id, modality).

Each process (web worker, Celery worker) keeps the index it serves in an `IndexHolder`; a new
index is published with one reference swap, so a reader holds one complete index for its
whole request. The file under settings.INDEX_DIR is a cache written by one writer at a time
(search/services/indexes.py): readers notice a replaced file by its stat signature (inode,
mtime, size; checked at most every SEARCH_RELOAD_CHECK_SECONDS) and load it with manifest and
checksum checks. A file that fails them is remembered as bad and never served; the last good
index keeps serving meanwhile, and the caller is told what is wrong so it can enqueue a
rebuild.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from search import index as si

logger = logging.getLogger(__name__)

FileSignature = tuple[int, int, int]  # (inode, mtime_ns, size)
MISSING, CORRUPT, MISMATCH = "missing", "corrupt", "mismatch"


@dataclass(frozen=True)
class Lookup:
    index: si.VectorIndex | None  # what to serve: the current index or the last good one
    problem: str | None = None  # None | missing | corrupt | mismatch (of the file on disk)
    detail: str = ""
    signature: FileSignature | None = None


@dataclass
class _Slot:
    holder: si.IndexHolder = field(default_factory=si.IndexHolder)
    signature: FileSignature | None = None  # of the file the served index was read from / saved to
    checked_at: float = float("-inf")
    bad: tuple[FileSignature, str, str] | None = None  # (signature, problem, detail) of a refused file
    load_lock: threading.Lock = field(default_factory=threading.Lock)
    rebuild_requested_at: float = float("-inf")


_slots: dict[tuple[int, str], _Slot] = {}
_slots_lock = threading.Lock()


def index_path(version_id: int, modality: str) -> Path:
    return Path(settings.INDEX_DIR) / f"v{int(version_id)}-{modality}.loupeidx"


def file_signature(path: Path) -> FileSignature | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _slot(version_id: int, modality: str) -> _Slot:
    key = (int(version_id), modality)
    with _slots_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = _Slot()
        return slot


def served(version_id: int, modality: str) -> tuple[si.VectorIndex | None, FileSignature | None]:
    """The index this process serves and the signature of the file it matches."""
    slot = _slot(version_id, modality)
    return slot.holder.get(), slot.signature


def publish(version_id: int, modality: str, index: si.VectorIndex, signature: FileSignature | None) -> None:
    """Serve `index` from now on (a complete object: readers switch over in one step)."""
    slot = _slot(version_id, modality)
    with slot.load_lock:
        slot.holder.swap(index)
        slot.signature, slot.bad, slot.checked_at = signature, None, time.monotonic()


def reset() -> None:
    """Forget every served index (tests; or to force reloading from disk)."""
    with _slots_lock:
        _slots.clear()


def should_request_rebuild(version_id: int, modality: str, every: float = 30.0) -> bool:
    """At most one rebuild request per index per `every` seconds from this process."""
    slot = _slot(version_id, modality)
    now = time.monotonic()
    with _slots_lock:
        if now - slot.rebuild_requested_at < every:
            return False
        slot.rebuild_requested_at = now
        return True


def load_file(path: Path, *, version_id: int, modality: str, dim: int) -> si.VectorIndex:
    """Open an index file, refusing another model version, dim, modality or a bad checksum."""
    return si.load(path, expected_model_version=str(version_id), expected_dim=dim, expected_modality=modality)


def lookup(version_id: int, modality: str, dim: int) -> Lookup:
    """The index to serve now, reloading the file if another process replaced it."""
    slot = _slot(version_id, modality)
    current = slot.holder.get()
    interval = float(settings.SEARCH_RELOAD_CHECK_SECONDS)
    if current is not None and time.monotonic() - slot.checked_at < interval:
        return Lookup(current)
    path = index_path(version_id, modality)
    sig = file_signature(path)
    if sig is None:
        return Lookup(current, MISSING, f"{path} does not exist")
    if current is not None and sig == slot.signature:
        slot.checked_at = time.monotonic()
        return Lookup(current, signature=sig)
    if slot.bad is not None and slot.bad[0] == sig:
        return Lookup(current, slot.bad[1], slot.bad[2], sig)
    # Only one thread loads; the others keep serving the last good index (or wait for it).
    if not slot.load_lock.acquire(blocking=current is None):
        return Lookup(current)
    try:
        return _load_into(slot, path, sig, version_id=version_id, modality=modality, dim=dim)
    finally:
        slot.load_lock.release()


def _load_into(slot: _Slot, path: Path, sig: FileSignature, *, version_id: int, modality: str,
               dim: int) -> Lookup:
    current = slot.holder.get()
    if current is not None and slot.signature == sig:  # another thread loaded it meanwhile
        return Lookup(current, signature=sig)
    try:
        loaded = load_file(path, version_id=version_id, modality=modality, dim=dim)
    except si.IndexMismatch as exc:
        slot.bad = (sig, MISMATCH, str(exc))
    except (si.IndexCorrupt, OSError, ValueError) as exc:
        slot.bad = (sig, CORRUPT, str(exc))
    else:
        slot.holder.swap(loaded)
        slot.signature, slot.bad, slot.checked_at = sig, None, time.monotonic()
        logger.info("loaded %s index of version %s (%d vectors) from %s", modality, version_id, loaded.count, path)
        return Lookup(loaded, signature=sig)
    logger.error("refusing index file %s: %s", path, slot.bad[2])
    return Lookup(current, slot.bad[1], slot.bad[2], sig)
