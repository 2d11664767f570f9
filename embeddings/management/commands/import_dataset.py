"""python manage.py import_dataset PATH --format flickr8k|coco|csv|folder --collection NAME"""
from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from embeddings import services
from embeddings.ingest.readers import FORMATS, DatasetError, read_dataset
from embeddings.services.importing import dataset_import


class Command(BaseCommand):
    help = "Import a captioned image dataset into a collection (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--collection", required=True)
        parser.add_argument("--images", type=Path, default=None, help="image folder, if not the default")
        parser.add_argument("--public", action="store_true", help="make a new collection public")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        try:
            items = read_dataset(opts["path"], opts["format"], opts["images"])
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        collection, _ = services.collection_get_or_create(name=opts["collection"], owner=None, is_public=opts["public"])
        started = time.monotonic()
        with tqdm(total=len(items), unit="img", disable=opts["no_progress"], file=self.stderr) as bar:
            summary = dataset_import(items=items, collection=collection, on_progress=bar.update)
        elapsed = time.monotonic() - started
        if opts["json"]:
            self.stdout.write(json.dumps({**summary.as_dict(), "seconds": round(elapsed, 1),
                                          "rejected_files": summary.rejected}))
            return
        self.stdout.write(
            f"{summary.imported} imported, {summary.present} already present, "
            f"{len(summary.rejected)} rejected, {summary.captions_added} captions added "
            f"into {collection.name!r} in {elapsed:.1f}s"
        )
        if not summary.imported and not summary.captions_added and summary.present:
            self.stdout.write("Nothing new: every image was already present.")
        for name, reason in summary.rejected:
            self.stdout.write(f"  rejected {name}: {reason}")
