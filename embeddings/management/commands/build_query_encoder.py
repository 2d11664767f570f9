"""python manage.py build_query_encoder [--epochs N] [--spans N] [--json] [--no-progress]

Build the static query tower that LOUPE_QUERY_ENCODER=static serves (docs/deploy.md, "Query
encoder"): distilled from MiniLM and fitted on the captions in the database and the ConSE class
names. Takes minutes on a CPU (the distillation is one MiniLM forward per word piece, ~30k);
rerun it after importing many new captions, then restart the web processes.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from embeddings.services.query_tower import DEFAULT_EPOCHS, DEFAULT_SPANS, static_tower_build
from project.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Build the static query encoder (LOUPE_QUERY_ENCODER=static) from the captions and class names."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="fit epochs (default %(default)s)")
        parser.add_argument("--spans", type=int, default=DEFAULT_SPANS,
                            help="random 2-8 word runs added per caption (default %(default)s)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        bars: dict[str, tqdm] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if opts["no_progress"]:
                return
            bar = bars.get(phase)
            if bar is None:
                bar = bars[phase] = tqdm(total=total, desc=phase, file=self.stderr)
            bar.update(done - bar.n)

        try:
            summary = static_tower_build(epochs=opts["epochs"], spans=opts["spans"], on_progress=progress)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for bar in bars.values():
                bar.close()
        if opts["json"]:
            self.stdout.write(json.dumps(summary.as_dict()))
            return
        self.stdout.write(f"static query encoder: {summary.path} ({summary.sentences} sentences, "
                          f"{summary.captions} captions, {summary.sentences_encoded} newly encoded; loss per "
                          f"epoch {summary.loss}; {summary.seconds:.0f} s). Serve it with "
                          "LOUPE_QUERY_ENCODER=static and restart the web processes.")
