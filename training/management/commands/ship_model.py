"""python manage.py ship_model --model-version ID --name NAME [--float32]

Copy a trained model version into the repository's models/ folder (float16 weights by default)
and list it in models/shipped.json, so `manage.py loupe_setup` registers it on fresh installs.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from embeddings.models import ModelVersion
from training.shipped import shipped_model_export


class Command(BaseCommand):
    help = "Copy a model version into models/ as a default model shipped with the project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-version", dest="model_version", type=int, required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--float32", action="store_true", help="keep float32 weights (twice the size)")

    def handle(self, *args, **opts) -> None:
        version = ModelVersion.objects.filter(pk=opts["model_version"]).first()
        if version is None or not version.directory:
            raise CommandError("No such trained model version.")
        dest = shipped_model_export(version=version, name=opts["name"], half=not opts["float32"])
        size = sum(p.stat().st_size for p in dest.iterdir())
        self.stdout.write(f"{version.name} -> {dest} ({size / 1e6:.1f} MB)")
