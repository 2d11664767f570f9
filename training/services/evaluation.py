"""Scoring the active models on a collection split (`manage.py evaluate`).

Embeddings are scored on two sets (issue 20): the in-domain split of the chosen collections
(Flickr8k dev) and an out-of-domain set, the dev split of `ood_collections` (built by
bench/build_ood_set.py and imported as "ood-dev"), each with its image and caption counts.
`record=True` stores both under the version's `metrics["sets"]`, where the admin shows them.

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
from training.encoders import Encoders, encoders_for_version


def _fields(version: ModelVersion) -> list[str]:
    if version.family == ModelVersion.Family.CONSE:
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


def _set_entry(name: str, collections: Sequence[Collection], split: str, rows: datasets.Split) -> dict[str, Any]:
    return {"set": name, "collections": [c.name for c in collections], "split": split,
            "images": rows.num_images, "captions": len(rows.texts)}


def model_evaluate(*, collections: Sequence[Collection], split: str, kinds: Sequence[str] = ("embedding", "captioner"),
                   encoders: Encoders | None = None, full: bool = True,
                   ood_collections: Sequence[Collection] = (), versions: Sequence[ModelVersion] = (),
                   record: bool = False) -> dict[str, Any]:
    """{kind: {"version", "name", "metrics"}} for each active model of `kinds` (None if absent).

    `versions` scores those versions instead of the active ones (a list per kind under
    "<kind>_versions"). With `ood_collections`, each embedding entry also has "ood_metrics",
    and "ood" gives that set's size."""
    rows = datasets.build_split(datasets.split_query(collections, split))
    if rows.num_images == 0:
        raise ApplicationError(f"No {split} images with human or imported captions in these collections.")
    ood_rows = None
    if ood_collections:
        ood_rows = datasets.build_split(datasets.split_query(ood_collections, "dev"))
        if ood_rows.num_images == 0:
            raise ApplicationError("No captioned dev images in the out-of-domain collection(s).")
    sets = {"in_domain": _set_entry("in-domain", collections, split, rows)}
    if ood_rows is not None:
        sets["ood"] = _set_entry("out-of-domain", ood_collections, "dev", ood_rows)
    out: dict[str, Any] = {"split": split, "images": rows.num_images, "captions": len(rows.texts), "sets": sets}
    if ood_rows is not None:
        out["ood"] = sets["ood"]
    for kind in kinds:
        chosen = [v for v in versions if v.kind == kind]
        if not versions:
            active = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
            chosen = [active] if active is not None else []
        entries = []
        for version in chosen:
            entry: dict[str, Any] = {"version": version.pk, "name": version.name, "family": version.family}
            fed = encoders or encoders_for_version(version)  # each version gets its own encoder's features
            if kind == "embedding":
                entry["metrics"] = embedding_evaluate(version=version, split=rows, encoders=fed)
                if ood_rows is not None:
                    entry["ood_metrics"] = embedding_evaluate(version=version, split=ood_rows, encoders=fed)
            else:
                entry["metrics"] = captioner_evaluate(version=version, split=rows, encoders=fed, full=full)
            if record:
                _record(version, sets, entry)
            entries.append(entry)
        out[kind] = entries[0] if entries else None
        if versions:
            out[f"{kind}_versions"] = entries
    return out


def _record(version: ModelVersion, sets: dict[str, dict], entry: dict[str, Any]) -> None:
    """Keep the scores on the version (`metrics["sets"]`, keyed by set kind) for the admin."""
    metrics = dict(version.metrics or {})
    stored = dict(metrics.get("sets") or {})
    stored["in_domain"] = {**sets["in_domain"], "metrics": entry["metrics"]}
    if "ood_metrics" in entry:
        stored["ood"] = {**sets["ood"], "metrics": entry["ood_metrics"]}
    metrics["sets"] = stored
    ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
    version.metrics = metrics


def evaluation_set(version: ModelVersion, which: str) -> dict[str, Any] | None:
    """One evaluation set's entry ({"images", "captions", "metrics", ...}) of a version, for the
    admin: what `evaluate --record` stored, else what its training run measured at the best
    epoch (dev metrics; the OOD set's as the "ood_*" keys) with the run's set sizes."""
    metrics = version.metrics or {}
    stored = (metrics.get("sets") or {}).get(which)
    if stored:
        return stored
    dev, data = metrics.get("dev") or {}, metrics.get("data") or {}
    if which == "in_domain" and dev:
        return {"images": data.get("dev_images"), "captions": data.get("dev_captions"),
                "metrics": {k: v for k, v in dev.items() if not k.startswith("ood_")}}
    if which == "ood" and any(k.startswith("ood_") for k in dev):
        return {"images": data.get("ood_images"), "captions": data.get("ood_captions"),
                "metrics": {k[4:]: v for k, v in dev.items() if k.startswith("ood_")}}
    return None
