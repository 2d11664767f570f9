"""embeddings/ml/atomic.py: the one way files are published (index files, checkpoints, word
vectors, class vectors, run results, the secret key)."""
from __future__ import annotations

import pytest

from embeddings.ml.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_a_block_that_fails_leaves_the_old_file_and_no_part_file(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"old")  # makes the folder too
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("killed while writing")
    assert path.read_bytes() == b"old" and [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_a_block_that_ends_replaces_the_file_whole(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "one")
    with atomic_open(path) as fh:
        fh.write(b"two, ")
        assert path.read_text() == "one"  # readers see the old file until the block ends
        fh.write(b"three")
    assert path.read_text() == "two, three" and not path.with_name("f.txt.part").exists()
