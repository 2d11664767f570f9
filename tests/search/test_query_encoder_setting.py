"""LOUPE_QUERY_ENCODER switches the online query path (search queries) and nothing else.

A real tiny joint checkpoint over the real MiniLM: query vectors of the search service come from
the configured query encoder, while stored caption vectors (and training) keep the fp32 encoder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings import runtime
from embeddings.ml import checkpoint as ckpt
from embeddings.ml.heads import EmbeddingConfig, JointEmbedding
from embeddings.ml.query_encoders import onnx_path
from embeddings.models import ModelVersion
from search.services import warmup
from search.services.queries import QueryTerm, query_encode

DIM = 8
TEXT = "a brown dog runs along the beach"


@pytest.fixture
def joint_version(db, settings, tmp_path):
    settings.MODEL_DIR = tmp_path / "models"
    settings.SEARCH_QUERY_CACHE_SIZE = 0
    runtime.reset()
    torch.manual_seed(0)
    config = EmbeddingConfig(dim=DIM, head="linear", hidden=8, dropout=0.0)
    tensors, cfg = ckpt.checkpoint_to_dict(JointEmbedding(config), config)
    ckpt.save_checkpoint(Path(settings.MODEL_DIR) / "joint", tensors=tensors, config=cfg, meta={"kind": "embedding"})
    ModelVersion.objects.filter(kind="embedding", status="active").update(status="retired")
    version = ModelVersion.objects.create(kind="embedding", name="joint", family="joint", status="active",
                                          directory="joint", dim=DIM)
    yield version
    runtime.reset()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def _head(version, base: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return runtime.embedder_for(version).model.encode_text(torch.from_numpy(base)).numpy()[0]


@pytest.mark.parametrize("kind", ["torch-int8", "onnx-int8"])
def test_the_setting_switches_the_search_query_path_only(kind, joint_version, settings):
    if kind.startswith("onnx"):
        pytest.importorskip("onnxruntime")
    settings.LOUPE_QUERY_ENCODER = kind
    assert runtime.query_text_encoder().kind == kind
    fp32_base = runtime.encode_texts_base([TEXT])
    query_base = runtime.encode_queries_base([TEXT])
    assert 0.98 < float((fp32_base * query_base).sum()) < 0.99999  # close to fp32, but quantised

    got = query_encode(version=joint_version, terms=[QueryTerm(text=TEXT)]).vector
    np.testing.assert_allclose(got, _unit(_head(joint_version, query_base)), atol=2e-3)  # float16 token
    assert np.abs(got - _unit(_head(joint_version, fp32_base))).max() > 5e-3  # not the fp32 vector

    # what is stored (caption vectors) keeps fp32, whatever the query path uses
    stored = runtime.embedder_for(joint_version).encode_texts([TEXT])[0]
    np.testing.assert_allclose(stored, _head(joint_version, fp32_base), atol=1e-6)


def test_torch_keeps_the_fp32_encoder_for_queries(joint_version, settings):
    settings.LOUPE_QUERY_ENCODER = "torch"
    assert runtime.query_embedder_for(joint_version) is runtime.embedder_for(joint_version)
    got = query_encode(version=joint_version, terms=[QueryTerm(text=TEXT)]).vector
    np.testing.assert_allclose(got, _unit(_head(joint_version, runtime.encode_texts_base([TEXT]))), atol=2e-3)


def test_the_onnx_export_is_built_once_under_model_dir_and_rebuilt_when_corrupt(joint_version, settings):
    pytest.importorskip("onnxruntime")
    settings.LOUPE_QUERY_ENCODER = "onnx-int8"
    runtime.query_text_encoder()
    path = onnx_path(Path(settings.MODEL_DIR) / "query-encoders", "onnx-int8", runtime.text_encoder().identity)
    assert path.is_file()
    built = path.stat().st_mtime_ns
    runtime.reset()  # a new process: loads the file, does not rebuild it
    runtime.query_text_encoder()
    assert path.stat().st_mtime_ns == built
    path.write_bytes(b"not an onnx model")
    runtime.reset()
    vec = runtime.encode_queries_base([TEXT])
    assert path.stat().st_size > 1_000_000
    assert float((vec * runtime.encode_texts_base([TEXT])).sum()) > 0.98


def test_warm_up_builds_the_query_encoder(joint_version, settings):
    pytest.importorskip("onnxruntime")
    settings.LOUPE_QUERY_ENCODER = "onnx"
    warmup.warm_up("web")
    assert warmup.state()["steps"]["text query"].startswith("ok")
    path = onnx_path(Path(settings.MODEL_DIR) / "query-encoders", "onnx", runtime.text_encoder().identity)
    assert path.is_file()


def test_a_worker_warm_up_loads_the_fp32_encoder_not_the_query_encoder(joint_version, settings):
    settings.LOUPE_QUERY_ENCODER = "onnx"
    state = warmup.warm_up("worker")
    assert state["steps"]["caption text"].startswith("ok")
    assert not (Path(settings.MODEL_DIR) / "query-encoders").exists()


def test_an_unknown_query_encoder_is_refused_at_start():
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "LOUPE_QUERY_ENCODER": "onnx-int4"}
    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr and "onnx-int4" in proc.stderr
