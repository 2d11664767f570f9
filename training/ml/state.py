"""Nested training state (optimizer, RNG, counters) <-> safetensors tensors + JSON, no pickle.

``pack_state(obj, prefix)`` walks dicts, lists and tuples, moves every tensor into a flat
``{name: tensor}`` map and leaves a JSON-safe tree with ``{"__tensor__": name}`` markers in
their place. Non-string dict keys (optimizer state is keyed by int) and tuples are tagged so
``unpack_state`` rebuilds exactly the same structure. Only None, bool, int, float, str,
tensors, numpy arrays (stored as tensors) and those containers are accepted: anything else
raises TypeError rather than being pickled.
"""

from __future__ import annotations

import math
import random
from typing import Any
from collections.abc import Mapping

import numpy as np
import torch

_T, _TUP, _D, _ND, _F = "__tensor__", "__tuple__", "__dict__", "__ndarray__", "__float__"


def pack_state(obj: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``obj`` into (tensors named ``prefix.<path>``, JSON-safe tree)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(obj, prefix, tensors)
    return tensors, tree


def unpack_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of ``pack_state``; raises KeyError if a referenced tensor is missing."""
    if isinstance(tree, list):
        return [unpack_state(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if _T in tree:
            return tensors[tree[_T]]
        if _ND in tree:
            return tensors[tree[_ND]].numpy().copy()
        if _F in tree:
            return float(tree[_F])
        if _TUP in tree:
            return tuple(unpack_state(v, tensors) for v in tree[_TUP])
        if _D in tree:
            return {k: unpack_state(v, tensors) for k, v in tree[_D]}
        return {k: unpack_state(v, tensors) for k, v in tree.items()}
    return tree


def _pack(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").clone()
        return {_T: path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {_ND: path}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else {_F: repr(value)}  # JSON has no inf/nan
    if isinstance(obj, tuple):
        return {_TUP: [_pack(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _pack(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {_D: [[_key_out(k), _pack(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} without pickling")


def _key_out(key: Any) -> Any:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"dict key {key!r} must be an int or a str")
    return key


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
