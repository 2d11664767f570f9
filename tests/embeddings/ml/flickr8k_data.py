"""Locate the shared Flickr8k folder for tests: skip when absent, fail under CI=true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FLICKR8K = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "flickr8k"


def require_flickr8k() -> Path:
    if (FLICKR8K / "Flickr8k.token.txt").is_file():
        return FLICKR8K
    message = f"Flickr8k not found at {FLICKR8K}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (required under CI=true)")
    pytest.skip(message)
