"""python manage.py evaluate --collection NAME --split dev|test [--json]

Scores the ACTIVE embedding (Recall@1/5/10 and median rank, both directions) and the ACTIVE
captioner (BLEU-1..4, METEOR when Java is present, ROUGE-L, CIDEr-D) on a collection split.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from embeddings.models import Collection
from project.exceptions import ApplicationError
from training.services.evaluation import model_evaluate


class Command(BaseCommand):
    help = "Evaluate the active models on a collection's dev or test split."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", action="append", required=True)
        parser.add_argument("--split", choices=["train", "dev", "test"], default="dev")
        parser.add_argument("--kind", choices=["embedding", "captioner"], action="append",
                            help="only this kind (default: both)")
        parser.add_argument("--quick", action="store_true", help="captions: simple tokenizer, no METEOR")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts) -> None:
        collections = list(Collection.objects.filter(name__in=opts["collection"]))
        if len(collections) != len(set(opts["collection"])):
            raise CommandError("Unknown collection name.")
        try:
            out = model_evaluate(collections=collections, split=opts["split"],
                                 kinds=opts["kind"] or ("embedding", "captioner"), full=not opts["quick"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if opts["json"]:
            self.stdout.write(json.dumps(out, indent=1))
            return
        self.stdout.write(f"{out['split']}: {out['images']} images, {out['captions']} captions")
        for kind in opts["kind"] or ("embedding", "captioner"):
            entry = out.get(kind)
            if entry is None:
                self.stdout.write(f"{kind}: no active version")
                continue
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in entry["metrics"].items())
            self.stdout.write(f"{kind} {entry['name']} (v{entry['version']}): {metrics}")
