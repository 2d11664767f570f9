"""Ship a bench checkpoint as one of the repository's default models (models/<name>/).

Usage (from the repo root, after bench/train_embedding_flickr8k.py or
bench/train_captioner_flickr8k.py wrote a checkpoint):

    .venv/bin/python bench/ship_flickr8k_model.py --kind embedding \
        --checkpoint var/models/embedding-flickr8k --name embedding-flickr8k \
        [--source "bench/train_embedding_flickr8k.py ..."]
    .venv/bin/python bench/ship_flickr8k_model.py --kind captioner \
        --checkpoint models/captioner-flickr8k --name captioner-flickr8k \
        --decoding '{"beam_size": 5, "length_penalty": 0.5}' --dev-scores FILE.json --source "..."

The same path the shipped captioner took: the checkpoint is registered transiently as a
ModelVersion (in a scratch sqlite database under --var, so no real database is touched) and
exported with ``training.shipped.shipped_model_export`` (float16 weights, models/shipped.json).

Embedding: the dev metrics stored in shipped.json are measured here on the float16 weights
(the loaders cast back to float32) with the cached dev features (var/cache/flickr8k, same
features the product's seeded evaluation uses) and the project's retrieval metrics; after the
export the shipped file is reloaded and must give the same figures. Captioner: ``--decoding``
replaces the decoding defaults stored in the checkpoint (beam width, length penalty,
no-repeat n-gram) and ``--dev-scores`` (a JSON dict of full COCO scores measured by
bench/eval_captioner_flickr8k.py --full) become its dev metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def embedding_dev_metrics(path: Path, cache: Path) -> dict:
    """Dev retrieval metrics of a checkpoint loaded as the product loads it (float32)."""
    from embeddings.ml.checkpoint import load_checkpoint
    from embeddings.ml.heads import embedding_from_state
    from training.ml.cached_features import load_split
    from training.ml.embedding_task import encode_split
    from training.ml.retrieval_metrics import retrieval_metrics

    tensors, config, _ = load_checkpoint(path, expected_kind="embedding")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model = embedding_from_state(config, tensors)
    field = "spatial" if config.get("image_input") == "spatial" else "pooled"
    dev = load_split(cache, "dev", image_field=field, views=("orig",)).data
    img, txt = encode_split(model, dev)
    return retrieval_metrics(img.numpy(), txt.numpy(), dev.text_image.numpy())


def halved_copy(src: Path, dest: Path) -> Path:
    """A float16 copy of ``src`` (what the export writes), to measure before exporting."""
    from embeddings.ml.checkpoint import load_checkpoint, save_checkpoint

    tensors, config, meta = load_checkpoint(src)
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_checkpoint(dest, tensors=tensors, config=config, meta=meta)
    return dest


def previous_entry(name: str) -> dict:
    """The models/shipped.json entry being replaced (captioner checkpoints do not store the
    encoder identities in their meta; the entry does)."""
    manifest = REPO / "models" / "shipped.json"
    models = json.loads(manifest.read_text())["models"] if manifest.is_file() else []
    return next((m for m in models if m["name"] == name), {})


def keep_order(manifest: Path, order: list[str]) -> None:
    """The export appends the replaced entry last; put it back where it was (smaller diff)."""
    data = json.loads(manifest.read_text())
    data["models"].sort(key=lambda m: order.index(m["name"]) if m["name"] in order else len(order))
    manifest.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["embedding", "captioner"], required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--cache", type=Path, default=REPO / "var/cache/flickr8k")
    p.add_argument("--var", type=Path, default=None, help="scratch LOUPE_VAR_DIR (default: a temp folder)")
    p.add_argument("--source", default="", help="how the checkpoint was trained (goes into shipped.json)")
    p.add_argument("--decoding", default=None, help="captioner: JSON DecodingConfig fields to set")
    p.add_argument("--dev-scores", type=Path, default=None, help="captioner: JSON file of full dev scores")
    args = p.parse_args()
    scratch = Path(args.var or tempfile.mkdtemp(prefix="loupe-ship-"))
    os.environ["LOUPE_VAR_DIR"] = str(scratch)
    os.environ.pop("DATABASE_URL", None)  # always the scratch sqlite database
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from embeddings.ml.checkpoint import load_checkpoint, save_checkpoint
    from embeddings.models import ModelVersion
    from training.shipped import shipped_model_export

    call_command("migrate", verbosity=0)
    src = args.checkpoint.resolve()
    _, config, meta = load_checkpoint(src, expected_kind=args.kind)
    card = {"source": args.source} if args.source else {}
    if args.kind == "embedding":
        metrics = embedding_dev_metrics(halved_copy(src, scratch / "half"), args.cache)
        card["measured"] = "float16 weights, cached dev features, training.ml.retrieval_metrics"
        family, dim = "joint", int(config["dim"])
    else:
        if args.decoding:  # new decoding defaults: rewrite the checkpoint's meta (weights unchanged)
            tensors, config, meta = load_checkpoint(src, expected_kind="captioner")
            meta = {**meta, "decoding": {**meta.get("decoding", {}), **json.loads(args.decoding)}}
            if args.dev_scores:
                meta["dev_scores"] = json.loads(args.dev_scores.read_text())
            src = save_checkpoint(scratch / "captioner", tensors=tensors, config=config, meta=meta).parent
        metrics = json.loads(args.dev_scores.read_text()) if args.dev_scores else meta.get("dev_scores", {})
        family, dim = "captioner", 0
    encoders = meta.get("encoders") or previous_entry(args.name).get("encoders", {})
    version = ModelVersion.objects.create(
        kind=args.kind, name=args.name, family=family, status=ModelVersion.Status.CANDIDATE,
        directory=str(src), config=meta.get("train_config", {}), encoders=encoders,
        metrics={"dev": metrics}, dim=dim)
    order = [m["name"] for m in json.loads((REPO / "models/shipped.json").read_text())["models"]]
    dest = shipped_model_export(version=version, name=args.name, card=card)
    keep_order(REPO / "models/shipped.json", order)
    if args.kind == "embedding":
        again = embedding_dev_metrics(dest, args.cache)
        if any(abs(again[k] - metrics[k]) > 1e-6 for k in metrics):
            raise SystemExit(f"shipped file scores differently: {again} vs {metrics}")
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(json.dumps({"shipped": str(dest), "bytes": size, "dev": metrics}, indent=1))


if __name__ == "__main__":
    main()
