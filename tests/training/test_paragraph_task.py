"""training/ml/paragraph_task.py: the leakage-free dev protocol, checked against hand-made vectors."""
from __future__ import annotations

import numpy as np

from training.ml.config import TrainConfig
from training.ml.paragraph_task import p2d_metrics, ranked_recalls, split_held_out


def test_held_out_split_keeps_the_query_captions_out_of_the_document():
    rows, docs, queries = split_held_out([["a", "b", "c", "d", "e"], ["x", "y"], ["p", "q", "r"]], 2)
    assert rows == [0, 2] and docs == ["a b c", "p"] and queries == ["d e", "q r"]


def test_ranked_recalls_against_hand_computed_ranks():
    candidates = np.eye(4, dtype=np.float32)
    # query 0 -> candidate 0 first; query 1 prefers candidate 2 (rank 2); query 2 -> rank 3; query 3 rank 1
    queries = np.array([[1, 0, 0, 0], [0, 0.6, 0.8, 0], [0.6, 0.5, 0.1, 0.6], [0, 0, 0, 1]], np.float32)
    out = ranked_recalls(candidates, queries, "p2d")
    assert out == {"p2d_r1": 50.0, "p2d_r5": 100.0, "p2d_r10": 100.0, "p2d_medr": 1.0}


def test_p2d_encodes_documents_and_queries_separately():
    seen = []

    def encode(texts):
        seen.append(list(texts))
        return np.eye(len(texts), 3, dtype=np.float32)

    out = p2d_metrics(encode, [["a", "b", "c"], ["d", "e", "f"]], 1)
    assert seen == [["a b", "d e"], ["c", "f"]] and out["p2d_r1"] == 100.0


def test_paragraph_kind_is_a_train_config_kind():
    config = TrainConfig.default("paragraph")
    assert config.model.dim == 200 and config.task.held_out == 2
    assert TrainConfig.from_dict(config.to_dict()) == config
