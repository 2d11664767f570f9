"""Registers the fault step after the real steps (encode, caption), so it runs once vectors are stored."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


def _knob(name: str, default):
    """Fault knobs are set by tests/reliability/*_settings.py; absent means off."""
    return getattr(settings, name, default)


def fault_step(images: list) -> str:
    fault_dir = _knob("LOUPE_TEST_FAULT_DIR", "")
    if fault_dir:
        line = f"{os.getpid()} {max(i.attempts for i in images)} {','.join(str(i.pk) for i in images)}\n"
        with open(Path(fault_dir) / "steps.log", "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    poison = _knob("LOUPE_TEST_POISON", "")
    if poison and any(poison in i.source_name for i in images):
        if _knob("LOUPE_TEST_POISON_MODE", "exit") == "exit":
            logger.error("poison image: killing this worker process")
            os._exit(70)  # no cleanup, no ack: what a segfault or the OOM killer does
        raise RuntimeError(f"poison image {poison!r} always crashes")
    slow = _knob("LOUPE_TEST_SLOW_NAME", "")
    if slow and any(slow in i.source_name for i in images):
        time.sleep(_knob("LOUPE_TEST_SLOW_SECONDS", 30.0))  # a long job (a big import's batch)
    delay = _knob("LOUPE_TEST_STEP_DELAY", 0.0)
    if delay and any(i.attempts == 1 for i in images):
        time.sleep(delay)
    return "fault step passed"


class FakeEmbedder:
    """A deterministic 16-d embedder: vectors from the image ids' features, texts from their hash."""

    family = "fake"
    dim = 16

    def encode_texts(self, texts):
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]  # same in every process
        rows = [np.random.default_rng(seed).standard_normal(16) for seed in seeds]
        out = np.asarray(rows, np.float32).reshape(len(texts), 16)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)

    def encode_features(self, feats):
        x = np.asarray(feats["pooled"], np.float32)[:, :16]
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)

    def cell_scores(self, spatial, query):
        return np.zeros(49, np.float32)


def _fake_features(image_ids, encoder="efficientnet-lite0"):
    ids = [int(i) for i in image_ids]
    pooled = np.stack([np.random.default_rng(i).standard_normal(1280) for i in ids]).astype(np.float32) if ids \
        else np.zeros((0, 1280), np.float32)
    return {"pooled": pooled, "spatial": np.zeros((len(ids), 49, 1280), np.float32),
            "logits": np.zeros((len(ids), 1000), np.float32)}


class FaultAppConfig(AppConfig):
    name = "tests.reliability.faultapp"
    label = "loupe_test_faultapp"

    def ready(self) -> None:
        from embeddings import encoding, runtime
        from embeddings.services import processing

        processing.register_step("test-fault", fault_step)
        if _knob("LOUPE_TEST_FAKE_ENCODER", False):
            encoding.features_for = _fake_features
            runtime.embedder_for = lambda version: FakeEmbedder()
