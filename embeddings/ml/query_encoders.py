"""Fast MiniLM encoders for the online query path (pure; no Django).

A search query is one short sentence encoded on one CPU thread, where the eager torch forward
spends most of its time in per-op overhead. These encoders give the same (N, 384) unit vectors
as ``TextEncoder.encode`` (measured: bench/query_encoder.py, docs/benchmarks.md):

- ``onnx``: the fp32 MiniLM (mean pooling and normalisation included) exported once with
  ``torch.onnx.export`` and run by ONNX Runtime (vectors equal fp32 to ~1e-6);
- ``onnx-int8``: that graph with dynamic int8 quantisation of its weight matrices
  (``onnxruntime.quantization.quantize_dynamic``, per-channel weights, activation-activation
  products left in fp32): cosine ~0.99 with fp32;
- ``torch-int8``: ``torch.ao.quantization.quantize_dynamic`` on the Linear layers of a copy
  of the model, in memory (per-channel qint8).

Only queries use them: training and cached caption vectors keep the fp32 encoder, so stored
vectors never depend on a serving option (see docs/deploy.md, "Query encoder").

An export is a file named by its kind, format version and a digest of the source encoder's
identity, with a JSON sidecar holding its sha256; ``load_or_build_onnx`` rebuilds it when it
is missing, corrupt or its sidecar disagrees, and publishes both atomically.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embeddings.ml.atomic import atomic_open
from embeddings.ml.image_encoder import file_sha256
from embeddings.ml.text_encoder import EMBED_DIM, TextEncoder, mean_pool

__all__ = ["EXPORT_FORMAT", "KINDS", "ExportError", "OnnxTextEncoder", "QueryEncoder",
           "TorchInt8TextEncoder", "TorchTextEncoder", "build_onnx", "check_sidecar", "empty_result",
           "load_or_build_onnx", "onnx_path", "read_sidecar", "sidecar_path", "write_sidecar"]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the exported graph or the quantisation recipe changes
KINDS = ("torch", "onnx", "onnx-int8", "torch-int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportError(RuntimeError):
    """An ONNX export is missing, corrupt or not what its sidecar says."""


# Dynamic quantisation scales each activation matrix by its range over the whole batch, so in a
# batch a text's int8 vector would depend on the texts batched with it (cosine ~0.99 with its
# vector alone). The search micro-batcher batches concurrent queries: to keep one query's vector
# (and ranking) the same whatever arrives with it, the int8 encoders run each text alone.
_DYNAMIC_RANGE_NOTE = None


class QueryEncoder(Protocol):
    kind: str
    identity: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...  # (N, 384) unit float32


def empty_result(texts: Sequence[str]) -> np.ndarray | None:
    """What every ``encode`` answers before encoding: TypeError for a bare string (a sequence of
    characters is never meant), the (0, 384) result for no texts, else None (encode them)."""
    if isinstance(texts, str):
        raise TypeError("pass a sequence of strings, not a single string")
    return np.zeros((0, EMBED_DIM), np.float32) if not texts else None


class TorchTextEncoder:
    """The fp32 ``TextEncoder`` itself, behind the query-encoder interface."""

    kind = "torch"

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.identity = encoder.identity

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts), normalize=True).numpy()


class TorchInt8TextEncoder:
    """Dynamic int8 Linear layers (per-channel weights) on a copy of the encoder's model."""

    kind = "torch-int8"

    def __init__(self, encoder: TextEncoder) -> None:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        self.tokenizer, self.max_length = encoder.tokenizer, encoder.max_length
        model = copy.deepcopy(encoder.model).cpu().eval()
        self.model = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        self.identity = f"{encoder.identity}|torch-int8"

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if (empty := empty_result(texts)) is not None:
            return empty
        out = []
        for text in texts:  # one at a time: see _DYNAMIC_RANGE_NOTE
            batch = self.tokenizer([text], truncation=True, max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state  # (1, T, 384)
            out.append(F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).numpy())
        return np.concatenate(out)


class _Pooled(nn.Module):
    """What is exported: token ids -> unit sentence vectors (B, 384), pooling in the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state  # (B, T, 384)
        return F.normalize(mean_pool(hidden, attention_mask), dim=-1)


def onnx_path(directory: str | Path, kind: str, identity: str) -> Path:
    """``<directory>/minilm-<kind>-v<format>-<digest of identity>.onnx``."""
    if kind not in ("onnx", "onnx-int8"):
        raise ValueError(f"no ONNX export for kind {kind!r}")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path(directory) / f"minilm-{kind}-v{EXPORT_FORMAT}-{digest}.onnx"


# A built file (an ONNX export here, the static tower in static_text.py) is trusted through a JSON
# sidecar beside it: what it was built from, and its sha256.
def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_sidecar(path: Path, meta: dict[str, Any]) -> None:
    with atomic_open(sidecar_path(path)) as fh:
        fh.write(json.dumps(meta, indent=1).encode())


def read_sidecar(path: Path, *, error: type[Exception] = ExportError) -> dict[str, Any]:
    try:
        return json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path.name}: unreadable sidecar ({exc})") from exc


def check_sidecar(path: Path, expected: dict[str, Any], *, error: type[Exception] = ExportError,
                  digest: Callable[[Path], str] = file_sha256) -> dict[str, Any]:
    """``path``'s sidecar, raising ``error`` unless its ``expected`` keys match and its sha256 is
    ``digest(path)``."""
    meta = read_sidecar(path, error=error)
    if {k: meta.get(k) for k in expected} != expected:
        raise error(f"{path.name}: built for {meta!r}, not {expected!r}")
    if meta.get("sha256") != digest(path):
        raise error(f"{path.name}: checksum mismatch (corrupt or replaced)")
    return meta


def build_onnx(encoder: TextEncoder, path: str | Path, *, kind: str) -> Path:
    """Export (and for ``onnx-int8`` quantise) ``encoder`` to ``path`` with its sidecar, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = encoder.tokenize(["a dog runs on the beach", "two children"])
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        module = _Pooled(copy.deepcopy(encoder.model).cpu().eval())
        with torch.no_grad():
            torch.onnx.export(
                module, tuple(sample[k].cpu() for k in _INPUTS), str(fp32), input_names=list(_INPUTS),
                output_names=["vector"], opset_version=17, dynamo=False,
                dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in _INPUTS}, "vector": {0: "batch"}})
        result = fp32
        if kind == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            result = Path(tmp) / "int8.onnx"
            # per-channel weights keep cosine ~0.99 with fp32 (per-tensor: ~0.97); products of two
            # activations (attention scores) stay fp32
            quantize_dynamic(str(fp32), str(result), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": True})
        elif kind != "onnx":
            raise ValueError(f"no ONNX export for kind {kind!r}")
        with open(result, "rb") as src, atomic_open(path) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    meta = {"format": EXPORT_FORMAT, "kind": kind, "source": encoder.identity, "sha256": file_sha256(path),
            "max_length": encoder.max_length}
    write_sidecar(path, meta)
    logger.info("built the %s query encoder %s (%.1f MB)", kind, path.name, path.stat().st_size / 1e6)
    return path


def _check(path: Path, kind: str, identity: str) -> None:
    if not path.is_file() or not sidecar_path(path).is_file():
        raise ExportError(f"{path.name}: missing")
    check_sidecar(path, {"format": EXPORT_FORMAT, "kind": kind, "source": identity})


class OnnxTextEncoder:
    """ONNX Runtime session of an export, with the source encoder's tokenizer."""

    def __init__(self, path: str | Path, encoder: TextEncoder, *, kind: str, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer, self.max_length = encoder.tokenizer, encoder.max_length
        self.kind, self.path = kind, Path(path)
        self.identity = f"{encoder.identity}|{kind}|v{EXPORT_FORMAT}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if (empty := empty_result(texts)) is not None:
            return empty
        if self.kind == "onnx-int8" and len(texts) > 1:  # see _DYNAMIC_RANGE_NOTE
            return np.concatenate([self._run([t]) for t in texts])
        return self._run(list(texts))

    def _run(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="np")
        feeds: dict[str, Any] = {k: batch[k].astype(np.int64) for k in _INPUTS}
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)  # (N, 384)


def load_or_build_onnx(encoder: TextEncoder, directory: str | Path, *, kind: str,
                       threads: int = 1) -> OnnxTextEncoder:
    """The export of ``encoder`` in ``directory``: loaded when present and intact, else (re)built.

    Callers that may race (several web processes) hold a file lock around this; the publish is
    atomic either way, so a reader never sees half a file."""
    path = onnx_path(directory, kind, encoder.identity)
    try:
        _check(path, kind, encoder.identity)
        return OnnxTextEncoder(path, encoder, kind=kind, threads=threads)
    except ExportError as exc:
        if path.exists() or sidecar_path(path).exists():
            logger.warning("rebuilding the %s query encoder: %s", kind, exc)
    except Exception as exc:  # onnxruntime refuses the file (truncated, not a model)
        logger.warning("rebuilding the %s query encoder: %s cannot be loaded (%s)", kind, path.name, exc)
    for stale in (path, sidecar_path(path)):
        if stale.exists():
            os.unlink(stale)
    build_onnx(encoder, path, kind=kind)
    return OnnxTextEncoder(path, encoder, kind=kind, threads=threads)
