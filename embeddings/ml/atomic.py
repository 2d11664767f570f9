"""Atomic file publication shared by checkpoints, the feature cache and index files (pure).

A file is written to ``<path>.part``, flushed and fsynced, then ``os.replace``d over ``path``; a
crash at any point leaves either the old file or the new one, never a mix. Syncing the folder
afterwards makes the rename itself durable.
"""
from __future__ import annotations

import os
from pathlib import Path


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


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` via ``<path>.part`` + fsync + ``os.replace``."""
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)  # never leave a half file behind; the old one stays
        raise
    if sync_dir:
        fsync_dir(path.parent)
