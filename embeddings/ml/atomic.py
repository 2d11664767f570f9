"""Atomic file publication shared by checkpoints, the feature cache and index files, and the one
streaming file digest they are checked with (pure).

A file is written to ``<path>.part``, flushed and fsynced, then ``os.replace``d over ``path``; a
crash at any point leaves either the old file or the new one, never a mix. Syncing the folder
afterwards makes the rename itself durable.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks (never memoised: it is also the check
    made right before a file is trusted)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    """fsync a folder so a rename inside it survives a power loss; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the replace is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # folder fsync unsupported on this file system
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike[str], *, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace ``path`` only when the block ends without
    an error (``<path>.part``, fsync, ``os.replace``); on an error the old file stays and no
    half file is left. For writers that stream (an index file is several large buffers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # data on disk before the rename makes it visible
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)  # never leave a half file behind; the old one stays
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` via ``<path>.part`` + fsync + ``os.replace``."""
    with atomic_open(path, sync_dir=sync_dir) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
