"""Tests for embeddings/ml/checkpoint.py: round trip, corruption, mismatch, no unpickling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from embeddings.ml.checkpoint import (
    CheckpointError,
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    checkpoint_to_dict,
    load_checkpoint,
    manifest_path,
    save_checkpoint,
)


@dataclasses.dataclass(frozen=True)
class _TinyConfig:
    width: int = 3
    name: str = "tiny"


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))


def _save_tiny(where: Path, seed: int = 0) -> Path:
    tensors, cfg = checkpoint_to_dict(_tiny_model(seed), _TinyConfig())
    meta = {"kind": "embedding", "encoders": {"image": "efficientnet-lite0"}, "vocab": ["<pad>", "a"]}
    return save_checkpoint(where, tensors=tensors, config=cfg, meta=meta)


def _weights_file(mpath: Path) -> Path:
    return mpath.parent / json.loads(mpath.read_text())["weights_file"]


def test_round_trip_restores_tensors_config_and_meta(tmp_path: Path) -> None:
    model = _tiny_model()
    mpath = _save_tiny(tmp_path / "ck")
    tensors, config, meta = load_checkpoint(tmp_path / "ck")
    assert mpath == tmp_path / "ck" / "checkpoint.json"
    assert config == {"width": 3, "name": "tiny"}
    assert meta["vocab"] == ["<pad>", "a"] and meta["kind"] == "embedding"
    fresh = _tiny_model(seed=1)
    fresh.load_state_dict(tensors)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_manifest_records_version_and_sha256_of_weights(tmp_path: Path) -> None:
    mpath = _save_tiny(tmp_path / "ck")
    manifest = json.loads(mpath.read_text())
    blob = _weights_file(mpath).read_bytes()
    assert manifest["format_version"] == 1
    assert manifest["weights_sha256"] == hashlib.sha256(blob).hexdigest()
    assert not list(mpath.parent.glob("*.part"))


def test_explicit_json_path_and_loading_by_it(tmp_path: Path) -> None:
    mpath = _save_tiny(tmp_path / "models" / "v3.json")
    assert mpath.name == "v3.json" and _weights_file(mpath).name.startswith("v3-")
    tensors, _, _ = load_checkpoint(mpath)
    assert set(tensors) == set(_tiny_model().state_dict())


def test_rewriting_in_place_keeps_one_weights_file(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "ck", seed=0)
    _save_tiny(tmp_path / "ck", seed=1)
    assert len(list((tmp_path / "ck").glob("*.safetensors"))) == 1
    tensors, _, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(tensors["0.weight"], _tiny_model(1).state_dict()["0.weight"])


def test_mutated_weights_are_detected(tmp_path: Path) -> None:
    mpath = _save_tiny(tmp_path / "ck")
    wfile = _weights_file(mpath)
    tensors, _, _ = load_checkpoint(mpath)
    tensors["0.weight"] = tensors["0.weight"] + 1e-3  # same shapes, valid safetensors
    blob = st_save(tensors)
    wfile.write_bytes(blob)
    with pytest.raises(CorruptCheckpoint, match="sha256|bytes"):
        load_checkpoint(mpath)


@pytest.mark.parametrize("damage", ["truncate", "zero", "bitflip"])
def test_damaged_weights_raise_corrupt(tmp_path: Path, damage: str) -> None:
    mpath = _save_tiny(tmp_path / "ck")
    wfile = _weights_file(mpath)
    data = bytearray(wfile.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "zero":
        data = bytearray()
    else:
        data[len(data) - 5] ^= 0x10
    wfile.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(mpath)


@pytest.mark.parametrize("damage", ["truncate", "zero", "bitflip"])
def test_damaged_manifest_raises_corrupt(tmp_path: Path, damage: str) -> None:
    mpath = _save_tiny(tmp_path / "ck")
    data = bytearray(mpath.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "zero":
        data = bytearray()
    else:
        data[data.index(b'"weights_sha256"') + 20] ^= 0x01  # flips one hex digit of the checksum
    mpath.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(mpath)


def test_another_models_json_swapped_in_is_a_mismatch(tmp_path: Path) -> None:
    a = _save_tiny(tmp_path / "a", seed=0)
    b = _save_tiny(tmp_path / "b", seed=1)
    manifest_b = json.loads(b.read_text())
    manifest_b["weights_file"] = _weights_file(a).name  # b's manifest, a's weights
    a.write_text(json.dumps(manifest_b))
    with pytest.raises(CorruptCheckpoint, match="mismatch"):
        load_checkpoint(a)


def test_missing_checkpoint_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "nothing")
    mpath = _save_tiny(tmp_path / "ck")
    _weights_file(mpath).unlink()
    with pytest.raises(CorruptCheckpoint, match="missing"):
        load_checkpoint(mpath)


def test_other_format_version_and_kind_are_incompatible(tmp_path: Path) -> None:
    mpath = _save_tiny(tmp_path / "ck")
    with pytest.raises(IncompatibleCheckpoint):
        load_checkpoint(mpath, expected_kind="caption")
    assert load_checkpoint(mpath, expected_kind="embedding")[2]["kind"] == "embedding"
    manifest = json.loads(mpath.read_text())
    manifest["format_version"] = 99
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleCheckpoint):
        load_checkpoint(mpath)


def test_weights_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    mpath = _save_tiny(tmp_path / "ck")
    manifest = json.loads(mpath.read_text())
    manifest["weights_file"] = "../elsewhere.safetensors"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(mpath)


class _Evil:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = pickle.dumps({"w": _Evil(str(marker))})
    # 1) handed directly, under names a careless loader might accept
    for name in ("evil.pt", "evil.json", "evil.safetensors"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    # 2) as the weights of an otherwise valid manifest whose checksum matches the pickle
    ck = tmp_path / "ck"
    mpath = _save_tiny(ck)
    manifest = json.loads(mpath.read_text())
    (ck / "evil.bin").write_bytes(payload)
    manifest.update(weights_file="evil.bin", weights_bytes=len(payload),
                    weights_sha256=hashlib.sha256(payload).hexdigest())
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(mpath)
    # 3) torch's own loader in the mode this project allows also refuses it
    torch.save({"w": _Evil(str(marker))}, tmp_path / "evil_torch.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "evil_torch.pt", weights_only=True)
    assert not marker.exists()


def test_half_written_checkpoint_is_never_seen_as_complete(tmp_path: Path, monkeypatch) -> None:
    import embeddings.ml.checkpoint as ckpt

    calls = {"n": 0}
    real = ckpt._atomic_write

    def dying_write(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if path.suffix == ".json":  # killed after the weights landed, before the manifest
            (path.with_name(path.name + ".part")).write_bytes(data[:10])
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(ckpt, "_atomic_write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        _save_tiny(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "ck")
    assert manifest_path(tmp_path / "ck") == tmp_path / "ck" / "checkpoint.json"
    assert calls["n"] == 2
    assert os.path.exists(tmp_path / "ck" / "checkpoint.json.part")
