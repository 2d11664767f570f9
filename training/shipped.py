"""Default models shipped in the repository's models/ folder (heads only, safetensors).

`shipped_models_register()` (called by `manage.py loupe_setup`) copies each shipped model into
MODEL_DIR, verifies its checksums, registers it as a ModelVersion and, on a fresh install
(no trained version of that kind active yet: only ConSE v0 or nothing), makes it active: at
once while no image has been processed, else through a background promotion.
ConSE v0 stays available as a retired version. Idempotent.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from embeddings.ml.atomic import atomic_open, sha256_file
from embeddings.ml.checkpoint import load_checkpoint
from embeddings.models import Collection, Image, ModelVersion

logger = logging.getLogger(__name__)
MANIFEST = "shipped.json"



def shipped_models_register(source: Path | None = None) -> list[str]:
    root = Path(source or settings.SHIPPED_MODEL_DIR)
    manifest = root / MANIFEST
    if not manifest.exists():
        return ["No shipped models (models/shipped.json missing)."]
    lines = []
    for entry in json.loads(manifest.read_text())["models"]:
        lines.append(_register(root, entry))
    return lines


def _register(root: Path, entry: dict) -> str:
    name, kind = entry["name"], entry["kind"]
    existing = ModelVersion.objects.filter(kind=kind, name=name).first()
    if existing is not None:
        return f"Shipped {kind} model {name!r}: already registered (v{existing.pk}, {existing.status})."
    src = root / entry["directory"]
    files = {p.name: sha256_file(p) for p in sorted(src.iterdir()) if p.is_file()}
    load_checkpoint(src, expected_kind="embedding" if kind == "embedding" else "captioner")  # verifies sha256
    dest_rel = Path("shipped") / entry["directory"]
    dest = Path(settings.MODEL_DIR) / dest_rel
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    active = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
    fresh = active is None or active.family == ModelVersion.Family.CONSE
    # Nothing processed yet (a fresh install: the demo images are still pending): flip at once,
    # the processing pipeline then encodes and captions them with the shipped models.
    direct = fresh and not Image.objects.filter(status=Image.Status.READY).exists()
    with transaction.atomic():
        if direct and active is not None:
            ModelVersion.objects.filter(pk=active.pk).update(status=ModelVersion.Status.RETIRED)
        version = ModelVersion.objects.create(
            kind=kind, name=name, family=entry.get("family", _default_family(kind)),
            status=ModelVersion.Status.ACTIVE if direct else ModelVersion.Status.CANDIDATE,
            directory=str(dest_rel), files=files, config=entry.get("config", {}), encoders=entry.get("encoders", {}),
            metrics=entry.get("metrics", {}), dim=int(entry.get("dim", 0)), parent=active,
            promoted_at=timezone.now() if direct else None)
    if direct:
        return f"Shipped {kind} model {name!r} registered as v{version.pk}, active."
    if fresh:
        from training.services.promotion import model_version_promote

        model_version_promote(version=version, force=True)  # the shipped default, measured
        return (f"Shipped {kind} model {name!r} registered as v{version.pk}; promotion started in the "
                "background (existing images are re-encoded first).")
    return f"Shipped {kind} model {name!r} registered as v{version.pk}, candidate (a trained version is active)."


def _default_family(kind: str) -> str:
    return str(ModelVersion.Family.JOINT if kind == "embedding" else ModelVersion.Family.CAPTIONER)


def shipped_model_export(*, version: ModelVersion, name: str, root: Path | None = None, half: bool = True,
                         card: dict | None = None, decoding: dict | None = None) -> Path:
    """Copy a version's checkpoint into the repository's models/<name>/ (float16 weights when
    `half`: the loaders cast back to float32) and record it in models/shipped.json.

    `decoding` (captioners) sets the decoding defaults stored with the copy (beam width, length
    penalty, no-repeat n-gram; the fields of `DecodingConfig`), the weights unchanged."""
    from embeddings.ml.caption_generator import DecodingConfig
    from embeddings.ml.checkpoint import save_checkpoint
    from embeddings.runtime import version_path

    root = Path(root or settings.SHIPPED_MODEL_DIR)
    kind = "embedding" if version.kind == ModelVersion.Kind.EMBEDDING else "captioner"
    tensors, config, meta = load_checkpoint(version_path(version), expected_kind=kind)
    if decoding:
        if kind != "captioner":
            raise ValueError("decoding defaults belong to captioners")
        meta = {**meta, "decoding": DecodingConfig.from_dict({**meta.get("decoding", {}), **decoding}).to_dict()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    dest = root / name
    if dest.exists():
        shutil.rmtree(dest)
    save_checkpoint(dest, tensors=tensors, config=config,
                    meta={**meta, "stored_dtype": "float16" if half else "float32"})
    manifest = root / MANIFEST
    data = json.loads(manifest.read_text()) if manifest.exists() else {"models": []}
    new_entry = {
        "name": name, "kind": kind, "family": version.family, "directory": name, "dim": version.dim,
        "config": version.config, "encoders": version.encoders,
        "metrics": {"dev": (version.metrics or {}).get("dev", {}), **(card or {})}}
    names = [m["name"] for m in data["models"]]
    if name in names:  # a replaced model keeps its place in the list
        data["models"][names.index(name)] = new_entry
    else:
        data["models"].append(new_entry)
    _write_manifest(manifest, data)
    return dest


def _write_manifest(manifest: Path, data: dict) -> None:
    with atomic_open(manifest) as fh:
        fh.write((json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def shipped_model_measure(*, name: str, collections: Sequence[Collection], ood_collections: Sequence[Collection] = (),
                          root: Path | None = None) -> dict[str, Any]:
    """Score the shipped copy models/<name>/ (its float16 weights, as a fresh install loads
    them) on the dev split of `collections` (and the out-of-domain `ood_collections`, for an
    embedding) with `model_evaluate`, and store the figures as its model-card metrics in
    models/shipped.json: "dev" (and "ood_dev"), with "measured" saying on what.

    The copy is scored through a transient model version that is deleted afterwards."""
    from training.services.evaluation import model_evaluate

    root = Path(root or settings.SHIPPED_MODEL_DIR)
    manifest = root / MANIFEST
    data = json.loads(manifest.read_text())
    entry = next((m for m in data["models"] if m["name"] == name), None)
    if entry is None:
        raise ValueError(f"{name!r} is not in {manifest}")
    kind = entry["kind"]
    version = ModelVersion.objects.create(
        kind=kind, name=f"{name} (measuring the shipped copy)", family=entry.get("family", _default_family(kind)),
        status=ModelVersion.Status.RETIRED, directory=str((root / entry["directory"]).resolve()),
        config=entry.get("config", {}), encoders=entry.get("encoders", {}), dim=int(entry.get("dim", 0)))
    try:
        out = model_evaluate(collections=collections, split="dev", kinds=[kind], versions=[version],
                             ood_collections=ood_collections if kind == "embedding" else ())
    finally:
        version.delete()
    scored = out[kind]
    metrics = {**entry.get("metrics", {}), "dev": scored["metrics"]}
    sets = [f"{', '.join(c.name for c in collections)} dev ({out['images']} images, {out['captions']} captions)"]
    if "ood_metrics" in scored:
        metrics["ood_dev"] = scored["ood_metrics"]
        sets.append(f"{', '.join(out['ood']['collections'])} ({out['ood']['images']} images)")
    else:
        metrics.pop("ood_dev", None)
    stored = load_checkpoint(root / entry["directory"])[2].get("stored_dtype", "float32")
    metrics["measured"] = (f"manage.py ship_model --measure: the shipped {stored} "
                           f"copy on {'; '.join(sets)}, {timezone.now():%Y-%m-%d}")
    entry["metrics"] = metrics
    _write_manifest(manifest, data)
    return metrics
