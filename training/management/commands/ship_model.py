"""python manage.py ship_model --model-version ID --name NAME [--float32] [--decoding JSON]
[--source TEXT] [--measure COLLECTION ...] [--ood-collection NAME ...]

Copy a trained model version into the repository's models/ folder (float16 weights by default)
and list it in models/shipped.json, so `manage.py loupe_setup` registers it on fresh installs.

- `--decoding '{"beam_size": 5, "length_penalty": 0.25, "no_repeat_ngram_size": 3}'` (captioners)
  stores those decoding defaults with the copy.
- `--measure flickr8k` scores the shipped copy itself (float16, as installs load it) on that
  collection's dev split, plus the out-of-domain set for an embedding (`--ood-collection`,
  default "ood-dev" when it exists), and stores the figures as the model card's metrics.
- `--source` records how the version was trained (the command line), for the model card.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from embeddings.models import Collection, ModelVersion
from project.exceptions import ApplicationError
from training.shipped import shipped_model_export, shipped_model_measure

DEFAULT_OOD = "ood-dev"


class Command(BaseCommand):
    help = "Copy a model version into models/ as a default model shipped with the project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-version", dest="model_version", type=int, required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--float32", action="store_true", help="keep float32 weights (twice the size)")
        parser.add_argument("--decoding", default=None, help="captioner: JSON decoding defaults to store")
        parser.add_argument("--source", default="", help="how the version was trained (for the model card)")
        parser.add_argument("--measure", action="append", default=[], metavar="COLLECTION",
                            help="score the shipped copy on this collection's dev split (repeatable)")
        parser.add_argument("--ood-collection", action="append", default=[],
                            help=f"out-of-domain set for --measure (default: {DEFAULT_OOD!r} when it exists)")

    def handle(self, *args, **opts) -> None:
        version = ModelVersion.objects.filter(pk=opts["model_version"]).first()
        if version is None or not version.directory:
            raise CommandError("No such trained model version.")
        try:
            decoding = json.loads(opts["decoding"]) if opts["decoding"] else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--decoding is not JSON: {exc}") from exc
        if decoding is not None and (not isinstance(decoding, dict) or version.kind != ModelVersion.Kind.CAPTIONER):
            raise CommandError("--decoding takes a JSON object, for a captioner.")
        collections = _collections(opts["measure"], "collection")
        ood = _collections(opts["ood_collection"], "out-of-domain collection") if opts["ood_collection"] else \
            list(Collection.objects.filter(name=DEFAULT_OOD)[:1]) if collections else []
        card = {"source": opts["source"]} if opts["source"] else None
        try:
            dest = shipped_model_export(version=version, name=opts["name"], half=not opts["float32"], card=card,
                                        decoding=decoding)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"Bad --decoding: {exc}") from exc
        size = sum(p.stat().st_size for p in dest.iterdir())
        self.stdout.write(f"{version.name} -> {dest} ({size / 1e6:.1f} MB)")
        if collections:
            try:
                metrics = shipped_model_measure(name=opts["name"], collections=collections, ood_collections=ood)
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            for key in ("dev", "ood_dev"):
                if key in metrics:
                    self.stdout.write(f"{key}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics[key].items()))


def _collections(names: list[str], what: str) -> list[Collection]:
    found = list(Collection.objects.filter(name__in=names))
    if len({c.name for c in found}) != len(set(names)):
        raise CommandError(f"Unknown {what} name.")
    return found
