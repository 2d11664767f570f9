"""Making a VectorIndex: built and tuned from vectors, or loaded from its file (pure)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from search.index import build as ib
from search.index.container import read_container
from search.index.container import read_manifest as _read_manifest_dict
from search.index.types import FLAT, IndexConfig, IndexCorrupt, IndexMismatch, Manifest
from search.index.vector_index import VectorIndex, _as_keys, normalise

logger = logging.getLogger(__name__)


def build_index(vectors: np.ndarray, ids: np.ndarray, *, model_version_id: str, modality: str,
                config: IndexConfig | None = None, tune_queries: np.ndarray | None = None) -> VectorIndex:
    """Build and tune an index over (N, D) vectors keyed by (N,) database ids.

    `tune_queries` (Q, D): real queries (e.g. caption embeddings for an image index) to tune
    and measure recall on; by default a held-out sample of the vectors themselves.
    """
    config = config or IndexConfig()
    keys = _as_keys(ids)
    xb = normalise(vectors)  # (N, D)
    if len(keys) != len(xb) or len(np.unique(keys)) != len(keys):
        raise ValueError("ids must be unique and one per vector")
    if not modality:
        raise ValueError("modality must be a non-empty string")
    dim = xb.shape[1]
    index_type = ib.choose_index_type(len(xb), dim, config)
    index, params = ib.new_index(index_type, dim, len(xb), config)
    ib.train(index, index_type, xb, config)
    recall = 1.0
    if index_type == FLAT:
        index.add(xb)
    elif tune_queries is not None:
        index.add(xb)
        params, recall = ib.tune(index, index_type, params, xb, config, normalise(tune_queries, dim))
    else:  # tune on a held-out sample, then add it: faiss positions follow the add order
        held = ib.held_out(len(xb), config)
        rest = np.setdiff1d(np.arange(len(xb)), held, assume_unique=True)
        index.add(xb[rest])
        params, recall = ib.tune(index, index_type, params, xb[rest], config, xb[held])
        index.add(xb[held])
        keys = np.concatenate([keys[rest], keys[held]])
    ib.after_add(index, index_type, params)
    logger.info("built %s index: %d x %d, params %s, recall@%d %.4f",
                index_type, len(xb), dim, params, config.recall_k, recall)
    return VectorIndex(index=index, index_type=index_type, params=params, dim=dim,
                       model_version_id=model_version_id, modality=modality, labels=keys,
                       alive=np.ones(len(keys), dtype=bool), recall=recall, config=config)


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of an index file (header checksum verified, payload not read)."""
    return Manifest.from_dict(_read_manifest_dict(path))


def load(path: str | Path, *, expected_model_version: str, expected_dim: int,
         expected_modality: str, config: IndexConfig | None = None) -> VectorIndex:
    """Open an index file; IndexMismatch / IndexCorrupt instead of serving nonsense.

    `config` overrides the stored one (e.g. a new exact_filter_max); None keeps it.
    """
    def check(m: dict[str, Any]) -> None:
        got = (str(m.get("model_version_id")), m.get("dim"), m.get("modality"))
        want = (str(expected_model_version), expected_dim, expected_modality)
        if got != want:
            raise IndexMismatch(f"{path}: index is for (model version, dim, modality) {got}, expected {want}")

    manifest, sections = read_container(path, check=check)
    try:
        index = faiss.deserialize_index(sections["faiss"])
        labels = sections["labels"].view(np.int64)
        alive = sections["alive"].astype(bool)
        stored_config = IndexConfig.from_dict(manifest["config"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise IndexCorrupt(f"{path}: unreadable payload: {exc}") from exc
    if index.d != expected_dim or index.ntotal != len(labels) or len(alive) != len(labels):
        raise IndexCorrupt(f"{path}: payload disagrees with itself (d={index.d}, "
                           f"ntotal={index.ntotal}, labels={len(labels)}, alive={len(alive)})")
    return VectorIndex(index=index, index_type=manifest["index_type"], params=manifest["params"],
                       dim=expected_dim, model_version_id=manifest["model_version_id"],
                       modality=manifest["modality"], labels=labels, alive=alive,
                       recall=manifest.get("recall"), config=config or stored_config)
