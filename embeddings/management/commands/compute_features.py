"""python manage.py compute_features --collection NAME [--image-encoder NAME] [--no-captions] [--json]
    [--no-progress]

Compute the encoder features of a collection's images and the sentence vectors of its captions
into the product's caches, before `manage.py train` or `manage.py evaluate` (which would compute
the missing ones themselves, more slowly seen from the outside: no progress bar). Resumable.
`--image-encoder efficientnet-lite2` fills that encoder's cache (for a run trained with
`--set task.image_encoder=efficientnet-lite2`); each encoder has its own.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from embeddings.ml.image_encoder import ENCODERS
from embeddings.ml.image_encoder import MODEL_NAME as LITE0
from embeddings.models import Collection, Image
from embeddings.services.features import collection_features_compute


class Command(BaseCommand):
    help = "Compute and cache the encoder features of a collection (images and caption texts)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", required=True)
        parser.add_argument("--image-encoder", choices=ENCODERS, default=LITE0,
                            help="whose features to cache (default %(default)s)")
        parser.add_argument("--no-captions", action="store_true", help="images only (the captioner needs no more)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        collection = Collection.objects.filter(name=opts["collection"]).order_by("pk").first()
        if collection is None:
            raise CommandError(f"Unknown collection {opts['collection']!r}.")
        total = Image.objects.filter(collection=collection).count()
        with tqdm(total=total, unit="img", disable=opts["no_progress"], file=self.stderr) as bar:
            summary = collection_features_compute(collection=collection, captions=not opts["no_captions"],
                                                  on_progress=bar.update, encoder=opts["image_encoder"])
        if opts["json"]:
            self.stdout.write(json.dumps(summary.as_dict()))
            return
        self.stdout.write(f"{collection.name}: {summary.images_encoded} of {summary.images} images encoded "
                          f"({summary.images - summary.images_encoded} cached), {summary.captions_encoded} of "
                          f"{summary.captions} caption texts encoded, {summary.seconds:.1f} s"
                          + (f"; {summary.images_unreadable} image file(s) unreadable (see the log)"
                             if summary.images_unreadable else ""))
