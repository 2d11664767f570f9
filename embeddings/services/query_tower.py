"""The static query tower (LOUPE_QUERY_ENCODER=static), built from the product's own texts.

`manage.py build_query_encoder` calls `static_tower_build`: the sentences are every caption in
the database written or imported by people (generated ones are left out) plus the ConSE class
names; their fp32 MiniLM vectors come from the text-vector cache (captions a training run
encoded are not encoded again). The tower is distilled from MiniLM and fitted to those vectors
(embeddings/ml/static_text.py) and published under MODEL_DIR/query-encoders; processes that
serve with LOUPE_QUERY_ENCODER=static load it when they start (restart them after a rebuild).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from embeddings import runtime
from embeddings.ml.conse import load_class_names
from embeddings.ml.static_text import build_static, tower_corpus
from embeddings.models import Caption
from project.exceptions import ApplicationError

logger = logging.getLogger(__name__)
DEFAULT_EPOCHS = 2
DEFAULT_SPANS = 0


@dataclass(frozen=True)
class TowerSummary:
    path: str
    sentences: int  # distinct sentences fitted on
    captions: int  # of them, captions from the database
    sentences_encoded: int  # newly encoded by MiniLM (the rest came from the text-vector cache)
    epochs: int
    loss: list[float]  # mean cosine loss per epoch
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def static_tower_build(*, epochs: int = DEFAULT_EPOCHS, spans: int = DEFAULT_SPANS,
                       on_progress: Callable[[str, int, int], None] | None = None) -> TowerSummary:
    """Distil, fit and publish the static tower; `on_progress(phase, done, total)` per step of
    each phase ("encode", "distil", "fit")."""
    if epochs < 1:
        raise ApplicationError("epochs must be at least 1.", fields={"epochs": ["Must be >= 1."]})
    t0 = time.perf_counter()
    captions = list(Caption.objects.exclude(source=Caption.Source.GENERATED)
                    .order_by("pk").values_list("text", flat=True))
    corpus = tower_corpus(captions, load_class_names(), spans=spans)

    encode_progress = None if on_progress is None else (lambda done, total: on_progress("encode", done, total))
    targets, encoded = runtime.cached_text_vectors(corpus, progress=encode_progress)
    path, fit = build_static(runtime.text_encoder(), corpus, targets, runtime.query_encoder_dir(), epochs=epochs,
                             info={"built": datetime.now(UTC).isoformat(timespec="seconds"), "captions": len(captions)},
                             progress=on_progress)
    logger.info("static query tower %s: %d sentences, loss %s", path.name, len(corpus), fit.losses)
    return TowerSummary(path=str(path), sentences=len(corpus), captions=len(captions), sentences_encoded=encoded,
                        epochs=epochs, loss=[round(x, 5) for x in fit.losses],
                        seconds=round(time.perf_counter() - t0, 1))
