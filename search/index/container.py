"""Atomic, checksummed container for an index file (pure: no Django, no FAISS).

Layout, one file so that one os.replace publishes everything at once:

    b"LOUPEIDX" | u64 manifest length | sha256(manifest) (32 bytes) | manifest JSON | payload

The manifest JSON carries the format version, the sections of the payload (name, offset,
length) and sha256 of the payload. A crash before the rename leaves the previous file in
place; a torn or bit-flipped file fails a checksum and raises IndexCorrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.ml.atomic import atomic_open
from search.index.types import FORMAT_VERSION, IndexCorrupt, IndexMismatch

logger = logging.getLogger(__name__)

MAGIC = b"LOUPEIDX"
_PREFIX = struct.Struct("<8sQ32s")  # magic, manifest length, manifest sha256
_CHUNK = 1 << 24  # hash 16 MiB at a time so a 2 GB payload is not copied


def write_container(
    path: str | Path, manifest: dict[str, Any], sections: list[tuple[str, np.ndarray]]
) -> dict[str, Any]:
    """Write `sections` (uint8-viewable arrays) with `manifest` atomically; return the full manifest."""
    path = Path(path)
    buffers = [(name, np.ascontiguousarray(arr).view(np.uint8).reshape(-1)) for name, arr in sections]
    payload_sha = hashlib.sha256()
    layout, offset = [], 0
    for name, buf in buffers:
        _update_hash(payload_sha, buf.data)  # a memoryview of the contiguous bytes
        layout.append({"name": name, "offset": offset, "length": int(buf.nbytes)})
        offset += buf.nbytes
    full = dict(manifest, format_version=FORMAT_VERSION, sections=layout, payload_bytes=offset,
                sha256=payload_sha.hexdigest())
    head = json.dumps(full, sort_keys=True).encode("utf-8")
    with atomic_open(path) as fh:
        fh.write(_PREFIX.pack(MAGIC, len(head), hashlib.sha256(head).digest()))
        fh.write(head)
        for _, buf in buffers:
            fh.write(buf.data)
    logger.info("wrote index file %s (%d payload bytes)", path, offset)
    return full


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and verify only the header (cheap: the payload is not hashed)."""
    with open(path, "rb") as fh:
        head = fh.read(_PREFIX.size)
        manifest, _ = _parse_header(head, fh.read, path)
    return manifest


def read_container(path: str | Path, *, check: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Verify header and payload checksums; return the manifest and its sections.

    `check(manifest)` runs after the header is verified and before the payload is hashed,
    so a mismatched model version fails fast without reading gigabytes.
    Sections are copies (the file is unmapped before returning).
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < _PREFIX.size:
            raise IndexCorrupt(f"{path}: {size} bytes, shorter than the header")
        manifest, start = _parse_header(fh.read(_PREFIX.size), fh.read, path)
        if check is not None:
            check(manifest)
        total = int(manifest.get("payload_bytes", -1))
        if size != start + total:
            raise IndexCorrupt(f"{path}: {size} bytes, manifest says {start + total} (truncated?)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                sha = hashlib.sha256()
                _update_hash(sha, view[start:])
                if sha.hexdigest() != manifest.get("sha256"):
                    raise IndexCorrupt(f"{path}: payload checksum mismatch")
                sections = {
                    s["name"]: np.frombuffer(view, np.uint8, s["length"], start + s["offset"]).copy()
                    for s in manifest["sections"]
                }
            finally:
                view.release()
    return manifest, sections


def _parse_header(prefix: bytes, read: Any, path: str | Path) -> tuple[dict[str, Any], int]:
    if len(prefix) < _PREFIX.size:
        raise IndexCorrupt(f"{path}: file shorter than the header")
    magic, length, digest = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise IndexCorrupt(f"{path}: not a Loupe index file (bad magic)")
    if length > 64 * 1024 * 1024:
        raise IndexCorrupt(f"{path}: implausible manifest length {length}")
    head = read(length)
    if len(head) != length or hashlib.sha256(head).digest() != digest:
        raise IndexCorrupt(f"{path}: manifest checksum mismatch")
    try:
        manifest = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # checksum passed, so a writer bug
        raise IndexCorrupt(f"{path}: manifest is not JSON: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatch(f"{path}: format version {manifest.get('format_version')}, expected {FORMAT_VERSION}")
    return manifest, _PREFIX.size + length


def _update_hash(sha: Any, view: memoryview) -> None:
    for i in range(0, len(view), _CHUNK):
        sha.update(view[i : i + _CHUNK])


