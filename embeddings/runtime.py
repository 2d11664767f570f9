"""The one Django-aware loader of models: per process, lazy, locked, keyed by model-version id.

Nothing loads at import time. The active version is looked up in the database on each call
(one indexed query), so a promotion is picked up by every process without a restart, while
the weights of each version are loaded once and kept.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.conf import settings
from PIL import Image as PILImage

from embeddings import selectors
from embeddings.ml.atomic import atomic_open
from embeddings.ml.caption_generator import CaptionGenerator, load_captioner
from embeddings.ml.checkpoint import CheckpointError
from embeddings.ml.conse import DEFAULT_K, DEFAULT_PROMPTS, DEFAULT_TEMPERATURE, class_vectors, load_class_names
from embeddings.ml.embedder import ConseEmbedder, Embedder, JointEmbedder
from embeddings.ml.feature_cache import FeatureCache
from embeddings.ml.image_encoder import MODEL_NAME as LITE0
from embeddings.ml.image_encoder import ImageEncoder, encoder_name_of, spatial_cells
from embeddings.ml.query_encoders import (OnnxTextEncoder, QueryEncoder, TorchInt8TextEncoder, TorchTextEncoder,
                                          load_or_build_onnx)
from embeddings.ml.static_text import StaticTowerError, load_static, static_path
from embeddings.ml.text_encoder import TextEncoder, default_model_path, identity_of
from embeddings.ml.transforms import batch_tensors
from embeddings.models import ModelVersion
from project.caching import BoundedCache
from project.exceptions import ApplicationError, NotFound, ServiceUnavailable

logger = logging.getLogger(__name__)
# Loaded models, encoders and class vectors per process (a version's embedder is a few MB, the
# encoders ~100 MB each): at most 32 kept, the least recently used dropped first.
_objects: BoundedCache[Any] = BoundedCache(32)
_load_lock = threading.RLock()  # one load at a time, so a model is never loaded twice at once
_MISSING = object()
FEATURE_FIELDS = {"pooled": (1280,), "spatial": (49, 1280), "logits": (1000,)}  # Lite0's


def feature_fields(encoder: str = LITE0) -> dict[str, tuple[int, ...]]:
    """The cached feature fields of one image encoder (Lite2's map has 81 cells, Lite0's 49)."""
    return {**FEATURE_FIELDS, "spatial": (spatial_cells(encoder), 1280)}


class ModelUnavailable(ServiceUnavailable):
    code = "model_unavailable"


class NoParagraphModel(NotFound):
    """No paragraph-vector version is active yet (a fresh install ships none): 404, like word
    vectors not learned yet; the message says how to get one."""

    code = "no_paragraph_model"


def device() -> str:
    wanted = settings.ML_DEVICE
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def _cached(key: Any, factory):
    hit = _objects.get(key, _MISSING)
    if hit is not _MISSING:
        return hit
    with _load_lock:  # re-entrant: an embedder's factory loads the text encoder
        hit = _objects.get(key, _MISSING)
        if hit is _MISSING:
            hit = _objects.put(key, factory())
        return hit


def reset() -> None:
    """Forget every loaded model (tests, or after files were replaced)."""
    with _load_lock:
        _objects.clear()


def image_encoder(name: str = LITE0) -> ImageEncoder:
    """One of the image encoders (embeddings.ml.image_encoder.ENCODERS), loaded once per process."""
    encoder_name_of(name)  # ValueError for an unknown name, before anything loads
    return _cached(("image_encoder", name), lambda: ImageEncoder(device=device(), model_name=name))


def image_encoder_name(version: ModelVersion | None) -> str:
    """The image encoder a model version was trained on, read from the identity it recorded
    (`version.encoders["image"]`; none recorded = Lite0). Its features are what it must be fed."""
    ident = str(((version.encoders or {}) if version is not None else {}).get("image") or "")
    try:
        return encoder_name_of(ident)
    except ValueError as exc:
        raise ModelUnavailable(f"Model version {version.pk if version else '?'} was trained on an image "
                               f"encoder this install does not have ({exc}).") from exc


def text_encoder() -> TextEncoder:
    return _cached("text_encoder", lambda: TextEncoder(device=device()))


def encode_texts_base(texts: list[str]) -> np.ndarray:
    """(N, 384) unit MiniLM sentence vectors (fp32: training, caption vectors, class vectors)."""
    return text_encoder().encode(texts, normalize=True).numpy()


# --- the online query path -------------------------------------------------------------------
# Search queries go through settings.LOUPE_QUERY_ENCODER: "torch" (the fp32 encoder above), "onnx" /
# "onnx-int8" (exports built on first use under MODEL_DIR/query-encoders), "torch-int8", or "static"
# (manage.py build_query_encoder's table; onnx-int8 until it exists). What is stored or trained on
# (caption vectors, the text cache, ConSE class vectors) keeps fp32, whatever serves queries.
def query_encoder_dir() -> Path:
    return Path(settings.MODEL_DIR) / "query-encoders"


def _build_query_encoder(kind: str) -> QueryEncoder:
    if kind == "static":  # loaded without the MiniLM model: a table and a tokenizer
        identity = identity_of()
        try:
            return load_static(static_path(query_encoder_dir(), identity), default_model_path() / "tokenizer.json",
                               identity=identity)
        except StaticTowerError as exc:
            logger.error("LOUPE_QUERY_ENCODER=static: %s; queries use onnx-int8 meanwhile", exc)
            kind = "onnx-int8"
    base = text_encoder()
    if kind == "torch":
        return TorchTextEncoder(base)
    if kind == "torch-int8":
        return TorchInt8TextEncoder(base)
    try:
        import onnxruntime  # noqa: F401  (requirements.txt pins it; a host without it still serves)
    except ImportError:
        logger.error("LOUPE_QUERY_ENCODER=%s needs onnxruntime, which is not installed: queries use "
                     "the fp32 torch encoder", kind)
        return TorchTextEncoder(base)
    directory = query_encoder_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{kind}.lock", "a+") as fh:  # one builder per host; others wait, then load
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            encoder: OnnxTextEncoder = load_or_build_onnx(base, directory, kind=kind, threads=torch.get_num_threads())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return encoder


def query_text_encoder() -> QueryEncoder:
    """This process's query encoder (settings.LOUPE_QUERY_ENCODER), built or loaded once."""
    kind = settings.LOUPE_QUERY_ENCODER
    return _cached(("query_encoder", kind), lambda: _build_query_encoder(kind))


def encode_queries_base(texts: list[str]) -> np.ndarray:
    """(N, 384) unit MiniLM vectors of search queries, through the configured query encoder."""
    return query_text_encoder().encode(texts)


def image_features(images: Sequence[PILImage.Image], encoder: str = LITE0) -> dict[str, np.ndarray]:
    """ONE batched forward of `encoder` at its own resolution: {"pooled": (B, 1280), "spatial":
    (B, cells, 1280) (Lite0 224 px: 49 cells; Lite2 260 px: 81), "logits": (B, 1000)} float32
    (preprocessing converts to RGB only what is not RGB already)."""
    if not images:
        return {k: np.zeros((0, *shape), np.float32) for k, shape in feature_fields(encoder).items()}
    enc = image_encoder(encoder)
    out = enc.encode(batch_tensors(images, size=enc.image_size))
    return {k: v.numpy().astype(np.float32, copy=False) for k, v in out.items()}


def encode_batch_size() -> int:
    """Images per encoder forward (settings.LOUPE_ENCODE_BATCH; 0 = 4 on CPU, where a bigger batch
    is slower per image (measured, docs/deploy.md "Ingest"), 32 on CUDA)."""
    size = int(settings.LOUPE_ENCODE_BATCH)
    if size > 0:
        return size
    return 32 if device() == "cuda" else 4


class ImagesUnreadable(ApplicationError):
    """Some stored images cannot be read or decoded. `failed` maps each such key to its reason;
    the features of the readable ones were computed and cached (`keys`, `features`)."""

    status_code = 422
    code = "image_unreadable"

    def __init__(self, failed: dict[str, str], *, keys: Sequence[str] = (),
                 features: dict[str, np.ndarray] | None = None) -> None:
        shown = "; ".join(f"{k}: {why}" for k, why in list(failed.items())[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} stored image(s) cannot be read: {shown}{more}")
        self.failed = dict(failed)
        self.keys = list(keys)
        self.features = features or {}


# What a loader raises for a file that is missing, truncated or not an image (Pillow's errors are
# OSError / ValueError / SyntaxError subclasses; DecompressionBombError is an Exception).
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, LookupError, PILImage.DecompressionBombError)


# --- feature caches ------------------------------------------------------------------------
# The product's two encoder caches, named here once: image features keyed by image id (one
# folder per image-encoder identity) and MiniLM sentence vectors keyed by a digest of the text
# (one folder per text-encoder identity). Training, evaluation and `manage.py compute_features`
# all go through these functions; several processes may add shards at once (a file lock each).
TEXT_FIELDS = {"vector": (384,)}
TEXT_BATCH = 256


def image_feature_key(image_id: int | str) -> str:
    return str(int(image_id))


def text_vector_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@contextmanager
def _locked_cache(directory: Path, identity: str, fields: dict[str, tuple[int, ...]]):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield FeatureCache(directory, encoder_identity=identity, fields=fields)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def image_feature_cache(encoder: str = LITE0):
    """The image-feature cache of one image encoder (a folder per encoder identity, so features
    of two encoders never mix), locked while the block runs."""
    ident = image_encoder(encoder).identity
    directory = Path(settings.FEATURE_DIR) / hashlib.sha256(ident.encode()).hexdigest()[:16]
    return _locked_cache(directory, ident, feature_fields(encoder))


def text_vector_cache():
    """The sentence-vector cache of the current text encoder, locked while the block runs."""
    ident = text_encoder().identity
    directory = Path(settings.FEATURE_DIR) / f"text-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    return _locked_cache(directory, ident, TEXT_FIELDS)


def _encode_missing(keys: Sequence[str], load_image: Callable[[str], PILImage.Image], batch: int,
                    encoder: str = LITE0) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    """(encoded keys, their features, {unreadable key: reason}): each image is decoded and
    preprocessed just before its batch's one forward, so at most `batch` decoded images live at
    a time; an unreadable image drops out of its batch, the others are encoded."""
    done: list[str] = []
    # filled in place, batch by batch: no second copy of the (N, 49, 1280) block at the end
    out = {f: np.empty((len(keys), *shape), np.float32) for f, shape in feature_fields(encoder).items()}
    failed: dict[str, str] = {}
    for start in range(0, len(keys), batch):
        images, ok = [], []
        for key in keys[start:start + batch]:
            try:
                images.append(load_image(key))
            except _UNREADABLE as exc:
                failed[key] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            ok.append(key)
        if ok:
            feats = image_features(images, encoder)
            for f in out:
                out[f][len(done):len(done) + len(ok)] = feats[f]
            done.extend(ok)
    return done, {f: v[:len(done)] for f, v in out.items()}, failed


def cached_features(keys: Sequence[str], load_image: Callable[[str], PILImage.Image],
                    encoder: str = LITE0) -> dict[str, np.ndarray]:
    """Features of the images named by `keys` (in order) from `encoder`, computed once per (image, encoder) and
    kept: the missing ones in forwards of `encode_batch_size()` images, then one cache shard.

    The cache's lock is held only to read and to add, never while encoding, so a long bulk
    chunk never makes an upload's encode wait. An image encoded meanwhile by another process is
    not added twice. Unreadable images raise `ImagesUnreadable` after the others are cached."""
    keys = [str(k) for k in keys]
    with image_feature_cache(encoder) as cache:
        missing = cache.missing(dict.fromkeys(keys))
        lacking = set(missing)
        present = [k for k in dict.fromkeys(keys) if k not in lacking]
        known = cache.get(present, dtype=np.float32) if present else None
    fresh, feats, failed = _encode_missing(missing, load_image, encode_batch_size(), encoder)
    if fresh:
        with image_feature_cache(encoder) as cache:
            new = set(cache.missing(fresh))  # re-read under the lock: another process may have added some
            rows = [i for i, k in enumerate(fresh) if k in new]
            if rows:
                cache.add([fresh[i] for i in rows],
                          feats if len(rows) == len(fresh) else {f: v[rows] for f, v in feats.items()})
    for v in feats.values():  # as stored (float16), so features never depend on cached or not
        v[...] = v.astype(np.float16)
    readable = [k for k in keys if k not in failed]
    if known is None and readable == fresh:  # the usual encode task: all new, in order, no copy
        out = feats
    else:
        where = {k: i for i, k in enumerate(present + fresh)}
        idx = np.array([where[k] for k in readable], dtype=np.int64)
        out = {f: (np.concatenate([known[f], feats[f]]) if known is not None else feats[f])[idx]
               for f in feats}
    if failed:
        raise ImagesUnreadable(failed, keys=readable, features=out)
    return out


def cached_text_vectors(texts: Sequence[str], progress: Callable[[int, int], None] | None = None,
                        ) -> tuple[np.ndarray, int]:
    """((M, 384) float32 unit MiniLM vectors of `texts`, how many were newly encoded): each
    distinct text is encoded once per text encoder and kept. `progress(done, total)` counts
    distinct texts (the cached ones at once, then each encoded batch)."""
    keys = [text_vector_key(t) for t in texts]
    with text_vector_cache() as cache:
        distinct = list(dict.fromkeys(keys))
        missing = cache.missing(distinct)
        text_of = dict(zip(keys, texts))
        done = len(distinct) - len(missing)
        if progress is not None:
            progress(done, len(distinct))
        for start in range(0, len(missing), 4096):  # one shard per 4,096 new texts
            batch = missing[start:start + 4096]
            parts = []
            for i in range(0, len(batch), TEXT_BATCH):
                parts.append(encode_texts_base([text_of[k] for k in batch[i:i + TEXT_BATCH]]))
                done += len(parts[-1])
                if progress is not None:
                    progress(done, len(distinct))
            cache.add(batch, {"vector": np.concatenate(parts)})
        if not keys:
            return np.zeros((0, TEXT_FIELDS["vector"][0]), np.float32), 0
        return cache.get(keys, dtype=np.float32)["vector"], len(missing)


# --- model versions -----------------------------------------------------------------------
def conse_class_vectors() -> np.ndarray:
    def build() -> np.ndarray:
        ident = hashlib.sha256((text_encoder().identity + repr(DEFAULT_PROMPTS)).encode()).hexdigest()[:16]
        path = Path(settings.MODEL_DIR) / "conse" / f"class-vectors-{ident}.npy"
        if path.exists():
            return np.load(path, allow_pickle=False)
        vecs = class_vectors(load_class_names(), encode_texts_base, DEFAULT_PROMPTS)
        with atomic_open(path) as fh:
            np.save(fh, vecs)
        return vecs

    return _cached("conse_class_vectors", build)


def _classifier(cells: np.ndarray, encoder: str = LITE0) -> np.ndarray:
    fc = image_encoder(encoder).backbone._fc
    with torch.no_grad():
        return fc(torch.from_numpy(cells).to(next(fc.parameters()).device)).float().cpu().numpy()


def version_path(version: ModelVersion) -> Path:
    path = Path(version.directory)
    return path if path.is_absolute() else Path(settings.MODEL_DIR) / path


def embedder_for(version: ModelVersion) -> Embedder:
    def build() -> Embedder:
        if version.family == ModelVersion.Family.CONSE:
            cfg = version.config or {}
            classifier = partial(_classifier, encoder=image_encoder_name(version))
            return ConseEmbedder(encode_texts_base, conse_class_vectors(), classifier,
                                 k=int(cfg.get("k", DEFAULT_K)),
                                 temperature=float(cfg.get("temperature", DEFAULT_TEMPERATURE)))
        return _checked_load(version, lambda: JointEmbedder.from_checkpoint(version_path(version), encode_texts_base))

    return _cached(("embedder", version.pk), build)


def query_embedder_for(version: ModelVersion) -> Embedder:
    """`embedder_for(version)` with the query encoder for texts: what search queries use (its
    heads are shared with the stored-vector embedder, not copied)."""
    kind = settings.LOUPE_QUERY_ENCODER
    if kind == "torch":
        return embedder_for(version)

    def build() -> Embedder:
        encoder = query_text_encoder()  # bound now: the embedder cached under `kind` uses that kind
        return embedder_for(version).with_text_encoder(encoder.encode)

    return _cached(("query_embedder", version.pk, kind), build)


def _label_word_vectors(texts: list[str]) -> np.ndarray:
    """MiniLM vectors for the stand-ins of out-of-vocabulary label words (kept in the text cache)."""
    return cached_text_vectors(texts)[0]


def _load_captioner(version: ModelVersion) -> CaptionGenerator:
    generator = load_captioner(version_path(version), device=device())
    generator.word_vectors = _label_word_vectors
    return generator


def captioner_for(version: ModelVersion) -> CaptionGenerator:
    return _cached(("captioner", version.pk), lambda: _checked_load(version, lambda: _load_captioner(version)))


def _checked_load(version: ModelVersion, load):
    """A checkpoint that is missing, corrupt, incompatible or not ours (e.g. a pickle) makes the
    model unavailable (503, logged), never a 500; nothing is cached, so a fixed file loads."""
    try:
        return load()
    except CheckpointError as exc:
        logger.error("model version %s (%s) cannot be loaded: %s", version.pk, version.kind, exc)
        raise ModelUnavailable(f"The {version.kind} model (version {version.pk}) cannot be loaded.") from exc


def active_version(kind: str) -> ModelVersion | None:
    return selectors.model_version_active(kind=kind)


def active_captioner() -> tuple[ModelVersion, CaptionGenerator]:
    version = active_version(ModelVersion.Kind.CAPTIONER)
    if version is None:
        raise ModelUnavailable("No active captioning model; train one from the admin.")
    return version, captioner_for(version)


def paragraph_for(version: ModelVersion):
    """The version's paragraph model and image index (embeddings.ml.paragraph_io.ParagraphIndex).

    gensim's model files are pickles: they are opened only after each file's sha256 matches the
    digests the database recorded when the trainer wrote them (`version.files`)."""
    from embeddings.ml.paragraph_io import load_paragraph

    # keyed by the folder too: a version id reused with other files (tests) never gets stale ones
    return _cached(("paragraph", version.pk, str(version_path(version))), lambda: _checked_load(
        version, lambda: load_paragraph(version_path(version), expected_files=version.files or {})))


def active_paragraph():
    """(active paragraph version, its ParagraphIndex); NoParagraphModel (404) when none."""
    version = active_version(ModelVersion.Kind.PARAGRAPH)
    if version is None:
        raise NoParagraphModel("No paragraph model yet: train one from the admin (Retrain paragraph vectors) "
                               "and promote it.")
    return version, paragraph_for(version)
