"""manage.py build_index: (re)build search indexes from the stored vectors, synchronously.

    python manage.py build_index                       # active version, both modalities
    python manage.py build_index --model-version 3 --modality image
    python manage.py build_index --missing             # first encode what lacks vectors
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.exceptions import ApplicationError
from search import selectors
from search.selectors import MODALITIES
from search.services import index_rebuild, reindex_missing


class Command(BaseCommand):
    help = "Build the FAISS index(es) of a model version from the vectors stored in the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-version", type=int, default=None,
                            help="embedding model version id (default: active)")
        parser.add_argument("--modality", choices=MODALITIES, default=None, help="image or caption (default: both)")
        parser.add_argument("--missing", action="store_true",
                            help="first encode images and captions without vectors (reindex missing)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = selectors.version_resolve(model_version_id=options["model_version"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["missing"]:
            report = reindex_missing(version=version, progress=self._progress)
            self.stdout.write(f"encoded {report['encoded_images']} images ({report['failed_images']} failed), "
                              f"{report['encoded_captions']} captions")
        for modality in [options["modality"]] if options["modality"] else list(MODALITIES):
            record = index_rebuild(version=version, modality=modality)
            recall = "n/a" if record.recall_at_10 is None else f"{record.recall_at_10:.4f}"
            self.stdout.write(f"{modality} index of version {version.pk}: {record.count} vectors, "
                              f"type {record.index_type}, recall@10 {recall}, file {record.path}")
        cov = selectors.coverage(version=version)
        self.stdout.write(f"coverage: images {cov['images_with_vectors']}/{cov['images']} "
                          f"({cov['image_coverage']:.1%}), captions {cov['captions_with_vectors']}/{cov['captions']} "
                          f"({cov['caption_coverage']:.1%})")

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.stdout.write(f"  {stage}: {done}/{total}")
