"""Tests for training/ml/config.py: strict dicts, round trips, overrides, kind registry."""

from __future__ import annotations

import dataclasses
import json

import pytest

from embeddings.ml.heads import EmbeddingConfig
from training.ml.config import LoopConfig, TrainConfig, apply_overrides, known_kinds, register_kind


def test_default_config_round_trips_through_json() -> None:
    cfg = TrainConfig.default()
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.loop.betas, tuple)


@pytest.mark.parametrize(
    "data",
    [
        {"loop": {"lrr": 1e-3}},
        {"model": {"dimension": 3}},
        {"task": {"captions": 2}},
        {"extra": {}},
        {"kind": "nope"},
        {"loop": {"epochs": "ten"}},
        {"loop": {"epochs": 0}},
        {"loop": {"betas": [0.9]}},
    ],
)
def test_from_dict_rejects_unknown_keys_and_bad_values(data: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig.from_dict(data)


def test_overrides_parse_by_field_type_and_resolve_bare_names() -> None:
    cfg = apply_overrides(
        TrainConfig.default(),
        ["loop.lr=3e-4", "epochs=7", "model.head=linear", "amp=false", "early_stop_metric=none",
         "betas=[0.8, 0.9]", "task.loss=both", "dim=256"],
    )
    assert cfg.loop.lr == 3e-4 and cfg.loop.epochs == 7 and cfg.loop.amp is False
    assert cfg.loop.early_stop_metric is None and cfg.loop.betas == (0.8, 0.9)
    assert cfg.model == dataclasses.replace(EmbeddingConfig(), head="linear", dim=256)
    assert cfg.task.loss == "both"


@pytest.mark.parametrize(
    "item",
    ["loop.nope=1", "nope=1", "epochs", "epochs=many", "model.head=transformer", "kind=caption",
     "amp=maybe", "weird.lr=1", "loop.epochs=0", "dropout=2"],
)
def test_bad_overrides_raise_value_error(item: str) -> None:
    with pytest.raises(ValueError):
        apply_overrides(TrainConfig.default(), [item])


def test_registered_kind_gets_its_own_sub_configs() -> None:
    @dataclasses.dataclass(frozen=True)
    class CapModel:
        layers: int = 2

    @dataclasses.dataclass(frozen=True)
    class CapTask:
        max_len: int = 20

    register_kind("test-caption", CapModel, CapTask)
    assert "test-caption" in known_kinds()
    cfg = TrainConfig.from_dict({"kind": "test-caption", "model": {"layers": 3}})
    assert cfg.model == CapModel(layers=3) and cfg.task == CapTask()
    assert apply_overrides(cfg, ["max_len=30"]).task.max_len == 30
    with pytest.raises(ValueError):
        TrainConfig.from_dict({"kind": "test-caption", "model": {"dim": 3}})
    with pytest.raises(ValueError):
        TrainConfig(kind="test-caption", loop=LoopConfig(), model=EmbeddingConfig(), task=CapTask())
