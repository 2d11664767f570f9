"""A static query tower distilled from MiniLM (pure; no Django): one vector per word piece.

A search query is a short sentence; the transformer costs milliseconds on one thread where a
table lookup and a mean cost microseconds. This module makes that table and serves it:

1. **Distil** (model2vec's recipe, Tulkens & van Dongen 2024): every word piece of MiniLM's
   vocabulary goes through MiniLM alone (``[CLS] piece [SEP]``), its output tokens are
   mean-pooled, the rows are weighted by SIF over a Zipf estimate of their frequency
   (``a / (a + p(rank))``, model2vec's ``compute_weights``) and centred.
2. **Fit** (Tokenlearn's idea, from the same authors): the rows are trained so that the mean of
   a sentence's rows points where MiniLM's own sentence vector points (cosine loss against the
   fp32 vectors of a corpus), with Adagrad on the rows a batch touches. Word pieces no sentence
   of the corpus contains keep their distilled row.
3. **Serve**: ``StaticTextEncoder`` is a ``model2vec.StaticModel`` over the fitted rows with
   MiniLM's own tokenizer (no special tokens, mean, L2 norm); it needs no torch model in memory.

The output is a (N, 384) unit vector in MiniLM's space, like every query encoder, so the same
tower serves every model version. Why not ``model2vec.distill``: its ``distill`` extra pins
``transformers<5.4`` (ours is 5.24) and installing it downgrades transformers and tokenizers;
the recipe is 20 lines on the encoder we already load. model2vec serves the result.

A tower is one safetensors file (``vectors`` (V, 384) float32, and ``format`` in its metadata)
named by format version and a digest of the source encoder's identity, with a JSON sidecar
(sha256, source, corpus size, fit loss); both are published atomically and checked on load.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embeddings.ml.atomic import atomic_open, sha256_file
from embeddings.ml.query_encoders import check_sidecar, empty_result, write_sidecar
from embeddings.ml.text_encoder import EMBED_DIM, MAX_LENGTH, TextEncoder

__all__ = ["STATIC_FORMAT", "StaticFit", "StaticTextEncoder", "StaticTowerError", "build_static", "distil_vectors",
           "fit_vectors", "load_static", "save_static", "static_path", "token_ids", "tower_corpus"]

logger = logging.getLogger(__name__)

STATIC_FORMAT = 1  # bump when the file layout or the recipe changes
SIF_COEFFICIENT = 1e-4  # model2vec's default


class StaticTowerError(RuntimeError):
    """A static tower file is missing, corrupt or not built for this encoder."""


def sif_weights(n: int, coefficient: float = SIF_COEFFICIENT) -> np.ndarray:
    """model2vec's ``compute_weights``: Zipf probability of rank i (ids as ranks), ``a / (a + p)``."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    return coefficient / (coefficient + inv_rank / inv_rank.sum())


@torch.no_grad()
def distil_vectors(encoder: TextEncoder, *, batch: int = 512, pieces: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(V, 384) float32: each word piece's MiniLM output (mean over ``[CLS] piece [SEP]``),
    SIF-weighted and centred. ``pieces`` keeps only the first ids (tests)."""
    tok = encoder.tokenizer
    vocab = len(tok) if pieces is None else min(pieces, len(tok))
    ids = torch.arange(vocab)
    model = encoder.model.eval()
    device = next(model.parameters()).device
    rows = []
    for start in range(0, vocab, batch):
        piece = ids[start:start + batch]
        inputs = torch.stack([torch.full_like(piece, tok.cls_token_id), piece,
                              torch.full_like(piece, tok.sep_token_id)], dim=1).to(device)
        hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
        rows.append(hidden.mean(dim=1).float().cpu().numpy())
        if progress is not None:
            progress(min(start + batch, vocab), vocab)
    table = np.concatenate(rows) * sif_weights(len(tok))[:vocab, None]
    return (table - table.mean(axis=0)).astype(np.float32)


def tower_corpus(captions: Sequence[str], class_names: Sequence[str], *, spans: int = 0, limit: int = 200_000,
                 seed: int = 0) -> list[str]:
    """The sentences a tower is fitted on, distinct, in a fixed order: the captions (at most
    ``limit``, a seeded sample beyond it), every comma-separated name of each class alone and as
    "a photo of a NAME.", and ``spans`` random runs of 2-8 words from each caption (the short
    phrases queries often are)."""
    rng = np.random.default_rng(seed)
    caps = list(dict.fromkeys(c.strip() for c in captions if c and c.strip()))
    if len(caps) > limit:
        caps = [caps[i] for i in sorted(rng.choice(len(caps), size=limit, replace=False))]
    names = [n.strip() for line in class_names for n in line.split(",") if n.strip()]
    out = caps + names + [f"a photo of a {n}." for n in names]
    for c in caps if spans else ():
        words = c.rstrip(" .").split()
        for _ in range(spans if len(words) >= 4 else 0):
            n = int(rng.integers(2, min(8, len(words) - 1), endpoint=True))
            start = int(rng.integers(0, len(words) - n, endpoint=True))
            out.append(" ".join(words[start:start + n]))
    return list(dict.fromkeys(out))


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Word-piece ids of each text as the static tower sees it (no special tokens, MiniLM's cap)."""
    return [tokenizer(t, add_special_tokens=False, truncation=True, max_length=MAX_LENGTH)["input_ids"]
            for t in texts]


class StaticFit:
    """What ``fit_vectors`` did: epochs run, mean cosine loss per epoch, sentences, seconds."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.sentences = 0
        self.seconds = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"epochs": len(self.losses), "loss": [round(x, 5) for x in self.losses],
                "sentences": self.sentences, "seconds": round(self.seconds, 1)}


def fit_vectors(table: np.ndarray, ids: Sequence[Sequence[int]], targets: np.ndarray, *, epochs: int = 3,
                lr: float = 0.05, batch: int = 64, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, StaticFit]:
    """Rows of ``table`` trained so that mean-pooled rows of each ``ids[i]`` match ``targets[i]``
    (unit MiniLM vectors) in cosine; sentences with no word piece are skipped. Deterministic for
    a seed. Returns the new table (float32) and the fit's record."""
    if len(ids) != len(targets):
        raise ValueError(f"{len(ids)} token lists but {len(targets)} targets")
    if targets.ndim != 2 or targets.shape[1] != table.shape[1]:
        raise ValueError(f"targets must be (N, {table.shape[1]}), got {targets.shape}")
    keep = [i for i, x in enumerate(ids) if len(x)]
    record = StaticFit()
    record.sentences = len(keep)
    if not keep:
        raise ValueError("no sentence of the corpus has a word piece: nothing to fit")
    bag = torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(np.array(table, np.float32)), freeze=False,
                                                mode="mean")
    opt = torch.optim.Adagrad(bag.parameters(), lr=lr)
    target = torch.from_numpy(np.asarray(targets, np.float32))
    rng = np.random.default_rng(seed)
    steps, total = 0, epochs * ((len(keep) + batch - 1) // batch)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = [keep[i] for i in rng.permutation(len(keep))]
        loss_sum = 0.0
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            flat = torch.tensor([t for r in rows for t in ids[r]], dtype=torch.long)
            offsets = torch.tensor(np.cumsum([0] + [len(ids[r]) for r in rows[:-1]]), dtype=torch.long)
            loss = (1 - F.cosine_similarity(bag(flat, offsets), target[rows])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(rows)
            steps += 1
            if progress is not None:
                progress(steps, total)
        record.losses.append(loss_sum / len(order))
    record.seconds = time.perf_counter() - t0
    return bag.weight.detach().numpy().astype(np.float32), record


def static_path(directory: str | Path, identity: str) -> Path:
    """``<directory>/minilm-static-v<format>-<digest of identity>.safetensors``."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path(directory) / f"minilm-static-v{STATIC_FORMAT}-{digest}.safetensors"


def save_static(table: np.ndarray, path: str | Path, *, identity: str, info: dict[str, Any]) -> Path:
    """Publish ``table`` (V, 384) and its sidecar atomically."""
    from safetensors.numpy import save

    if table.ndim != 2 or table.shape[1] != EMBED_DIM or not np.isfinite(table).all():
        raise ValueError(f"a static tower is a finite (V, {EMBED_DIM}) table, got {table.shape}")
    path = Path(path)
    blob = save({"vectors": np.ascontiguousarray(table, dtype=np.float32)}, metadata={"format": str(STATIC_FORMAT)})
    with atomic_open(path) as fh:
        fh.write(blob)
    write_sidecar(path, {"format": STATIC_FORMAT, "kind": "static", "source": identity, "sha256": sha256_file(path),
                         "vocab": int(table.shape[0]), **info})
    return path


def build_static(encoder: TextEncoder, corpus: Sequence[str], targets: np.ndarray, directory: str | Path, *,
                 epochs: int, info: dict[str, Any],
                 progress: Callable[[str, int, int], None] | None = None) -> tuple[Path, StaticFit]:
    """Distil ``encoder``, fit the rows to ``targets`` (its unit vectors of ``corpus``) and publish the
    tower under ``directory``; ``progress(phase, done, total)`` for "distil" and "fit"."""
    def phase(name: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(name, done, total))

    table, fit = fit_vectors(distil_vectors(encoder, progress=phase("distil")), token_ids(encoder.tokenizer, corpus),
                             targets, epochs=epochs, progress=phase("fit"))
    path = save_static(table, static_path(directory, encoder.identity), identity=encoder.identity,
                       info={"sentences": len(corpus), **info, "fit": fit.as_dict()})
    return path, fit


class StaticTextEncoder:
    """The fitted rows behind ``model2vec.StaticModel`` (MiniLM's tokenizer, mean, L2 norm)."""

    kind = "static"

    def __init__(self, table: np.ndarray, tokenizer_file: str | Path, *, identity: str) -> None:
        from model2vec import StaticModel
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        if tokenizer.get_vocab_size() != table.shape[0]:
            raise StaticTowerError(f"the tower has {table.shape[0]} rows, the tokenizer "
                                   f"{tokenizer.get_vocab_size()} pieces")
        self.model = StaticModel(vectors=table, tokenizer=tokenizer, normalize=True, max_length=MAX_LENGTH)
        self.identity = f"{identity}|static|v{STATIC_FORMAT}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if (empty := empty_result(texts)) is not None:
            return empty
        out = self.model.encode(list(texts), show_progress_bar=False, use_multiprocessing=False)
        return np.asarray(out, dtype=np.float32)


def load_static(path: str | Path, tokenizer_file: str | Path, *, identity: str) -> StaticTextEncoder:
    """The tower at ``path``, checked against its sidecar (format, source, sha256)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise StaticTowerError(f"{path.name}: missing (build it with `manage.py build_query_encoder`)")
    check_sidecar(path, {"format": STATIC_FORMAT, "kind": "static", "source": identity}, error=StaticTowerError,
                  digest=sha256_file)
    try:
        table = load_file(str(path))["vectors"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise StaticTowerError(f"{path.name}: unreadable ({exc})") from exc
    return StaticTextEncoder(table, tokenizer_file, identity=identity)
