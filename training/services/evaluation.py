"""Scoring the active models on a collection split (`manage.py evaluate`).

Embedding: Recall@1/5/10 and median rank both ways (image->text, text->image) over the
split's images and their human/imported captions. Captioner: BLEU-1..4, ROUGE-L, CIDEr-D
(and METEOR with the PTB tokenizer when Java is present) of one caption per image, decoded
with the version's own tuned settings, against all its references.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embeddings.models import Collection, ModelVersion
from project.exceptions import ApplicationError
from training import datasets
from training.encoders import Encoders, get_encoders


def _fields(version: ModelVersion) -> list[str]:
    if version.family == "conse":
        return ["logits"]
    model_cfg = (version.config or {}).get("model", version.config or {})
    return ["spatial" if model_cfg.get("image_input") == "spatial" else "pooled"]


def embedding_evaluate(*, version: ModelVersion, split: datasets.Split, encoders: Encoders) -> dict[str, float]:
    from training.ml.retrieval_metrics import retrieval_metrics

    feats = encoders.image_features(split.image_ids, _fields(version))
    img, txt = encoders.embed(version, feats, split.texts)
    return retrieval_metrics(np.asarray(img, np.float32), np.asarray(txt, np.float32), np.asarray(split.caption_image))


def captioner_evaluate(*, version: ModelVersion, split: datasets.Split, encoders: Encoders,
                       full: bool = True, beam_size: int | None = None) -> dict[str, float]:
    """`full`: PTB tokenizer + METEOR when Java is present; `beam_size` None = the version's own."""
    from training.ml.caption_metrics import caption_scores, java_available

    feats = encoders.image_features(split.image_ids, ["pooled", "spatial"])
    hyps = encoders.caption(version, feats, beam_size=beam_size)
    keys = [str(i) for i in split.image_ids]
    refs = dict(zip(keys, split.captions_per_image()))
    java = full and java_available()
    return caption_scores(dict(zip(keys, hyps)), refs, tokenizer="ptb" if java else "simple", meteor=java)


def model_evaluate(*, collections: Sequence[Collection], split: str, kinds: Sequence[str] = ("embedding", "captioner"),
                   encoders: Encoders | None = None, full: bool = True) -> dict[str, Any]:
    """{kind: {"version", "name", "metrics"}} for each active model of `kinds` (None if absent)."""
    rows = datasets.build_split(datasets.split_query(collections, split))
    if rows.num_images == 0:
        raise ApplicationError(f"No {split} images with human or imported captions in these collections.")
    encoders = encoders or get_encoders()
    out: dict[str, Any] = {"split": split, "images": rows.num_images, "captions": len(rows.texts)}
    for kind in kinds:
        version = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
        if version is None:
            out[kind] = None
            continue
        if kind == "embedding":
            metrics = embedding_evaluate(version=version, split=rows, encoders=encoders)
        else:
            metrics = captioner_evaluate(version=version, split=rows, encoders=encoders, full=full)
        out[kind] = {"version": version.pk, "name": version.name, "metrics": metrics}
    return out
