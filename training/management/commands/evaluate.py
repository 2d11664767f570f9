"""python manage.py evaluate --collection NAME --split dev|test [--ood-collection ood-dev] [--model-version ID]
[--record] [--json]

Scores the ACTIVE embedding (Recall@1/5/10 and median rank, both directions) and the ACTIVE
captioner (BLEU-1..4, METEOR when Java is present, ROUGE-L, CIDEr-D) on a collection split.
Embeddings are also scored on the out-of-domain set (`--ood-collection`, default "ood-dev"
when such a collection exists; `--no-ood` skips it). `--model-version` scores given versions
instead of the active ones (e.g. ConSE v0 beside a trained one); `--record` keeps the scores
and set sizes on each version, for the admin.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from embeddings.models import Collection, ModelVersion
from project.exceptions import ApplicationError
from training.services.evaluation import model_evaluate


DEFAULT_OOD = "ood-dev"  # the collection docs/retraining.md imports bench/build_ood_set.py's set as


class Command(BaseCommand):
    help = "Evaluate the active models on a collection's dev or test split."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", action="append", required=True)
        parser.add_argument("--split", choices=["train", "dev", "test"], default="dev")
        parser.add_argument("--kind", choices=["embedding", "captioner"], action="append",
                            help="only this kind (default: both)")
        parser.add_argument("--quick", action="store_true", help="captions: simple tokenizer, no METEOR")
        parser.add_argument("--ood-collection", action="append", default=[],
                            help=f"out-of-domain set (default: {DEFAULT_OOD!r} when it exists)")
        parser.add_argument("--no-ood", action="store_true", help="score the in-domain split only")
        parser.add_argument("--model-version", type=int, action="append", default=[],
                            help="score this version instead of the active one (repeatable)")
        parser.add_argument("--record", action="store_true", help="store the scores on each version")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts) -> None:
        collections = list(Collection.objects.filter(name__in=opts["collection"]))
        if len(collections) != len(set(opts["collection"])):
            raise CommandError("Unknown collection name.")
        ood_names = opts["ood_collection"] or ([] if opts["no_ood"] else [DEFAULT_OOD])
        ood = list(Collection.objects.filter(name__in=ood_names))
        if opts["ood_collection"] and len(ood) != len(set(opts["ood_collection"])):
            raise CommandError("Unknown out-of-domain collection name.")
        versions = list(ModelVersion.objects.filter(pk__in=opts["model_version"]).order_by("pk"))
        if len(versions) != len(set(opts["model_version"])):
            raise CommandError("Unknown model version.")
        kinds = opts["kind"] or (sorted({v.kind for v in versions}) if versions else ("embedding", "captioner"))
        try:
            out = model_evaluate(collections=collections, split=opts["split"], kinds=kinds, full=not opts["quick"],
                                 ood_collections=[] if opts["no_ood"] else ood, versions=versions,
                                 record=opts["record"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if opts["json"]:
            self.stdout.write(json.dumps(out, indent=1))
            return
        self.stdout.write(f"{out['split']} ({', '.join(opts['collection'])}): {out['images']} images, "
                          f"{out['captions']} captions")
        if "ood" in out:
            self.stdout.write(f"out-of-domain dev ({', '.join(out['ood']['collections'])}): {out['ood']['images']} "
                              f"images, {out['ood']['captions']} captions")
        for kind in kinds:
            entries = out.get(f"{kind}_versions") or ([out[kind]] if out.get(kind) else [])
            if not entries:
                self.stdout.write(f"{kind}: no active version")
            for entry in entries:
                metrics = ", ".join(f"{k} {v:.2f}" for k, v in entry["metrics"].items())
                self.stdout.write(f"{kind} {entry['name']} (v{entry['version']}) {out['split']}: {metrics}")
                if "ood_metrics" in entry:
                    metrics = ", ".join(f"{k} {v:.2f}" for k, v in entry["ood_metrics"].items())
                    self.stdout.write(f"{kind} {entry['name']} (v{entry['version']}) out-of-domain: {metrics}")
