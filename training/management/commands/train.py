"""python manage.py train --kind embedding|captioner|paragraph --collection NAME [--config FILE] [--set key=value ...]

The same service as the admin's Retrain button and the REST API, run synchronously in this
process with a progress bar: the run is recorded (and shown in the admin) like any other.
"""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from embeddings.models import Collection
from project.exceptions import ApplicationError
from training import services
from training.services.configs import KINDS
from training.services.promotion import NeedsConfirmation, model_version_promote


class Command(BaseCommand):
    help = "Train a model version on collections (synchronously, with a progress bar)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, choices=list(KINDS))
        parser.add_argument("--collection", action="append", required=True, help="repeat for several")
        parser.add_argument("--config", type=Path, help="JSON file: a full or partial TrainConfig")
        parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                            help="override one setting, e.g. --set loop.epochs=10 (repeatable)")
        parser.add_argument("--promote", action="store_true", help="promote the result (synchronously)")
        parser.add_argument("--force", action="store_true",
                            help="with --promote: promote even if the result is worse than the active "
                                 "version or measured on a tiny set")
        parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        names = opts["collection"]
        collections = list(Collection.objects.filter(name__in=names))
        missing = sorted(set(names) - {c.name for c in collections})
        if missing:
            raise CommandError(f"No such collection(s): {', '.join(missing)}")
        overrides = None
        if opts["config"]:
            try:
                overrides = json.loads(opts["config"].read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise CommandError(f"--config {opts['config']}: {exc}") from exc
        try:
            run = services.training_run_start(kind=opts["kind"], collections=collections, config_overrides=overrides,
                                              config_sets=opts["sets"], user=None, enqueue=False)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"Training run {run.pk} ({run.kind}) on {', '.join(names)}")
        bar = tqdm(total=run.total_steps or None, unit="step", disable=opts["no_progress"], file=self.stderr)

        phase = [""]

        def on_progress(name: str, payload: dict) -> None:
            if name == "prepare":  # features before the epochs: the bar counts them first
                if phase[0] != payload["phase"]:
                    phase[0] = payload["phase"]
                    bar.reset(total=payload["total"])
                    bar.set_description(payload["phase"])
                bar.n = payload["done"]
                bar.refresh()
            elif name == "start":
                bar.set_description("")
                bar.reset(total=payload["total_steps"])
                bar.update((payload.get("resumed_from_epoch") or 0) * payload["num_batches"])
            elif name == "step":
                bar.n = payload["step"]
                losses = [v for k, v in payload["losses"].items() if k.endswith("_loss")]
                extra = {"loss": f"{sum(losses):.4f}"} if losses else {}  # gensim (paragraph) reports none
                if "scst_reward" in payload["losses"]:  # the self-critical phase: its mean reward
                    extra["reward"] = f"{payload['losses']['scst_reward']:.3f}"
                bar.set_postfix(epoch=payload["epoch"], lr=f"{payload['lr']:.2e}", **extra)
                bar.refresh()
            elif name == "phase":
                bar.write(f"phase {payload['phase']} from epoch {payload['epoch'] + 1}", file=self.stderr)
            elif name == "epoch" and payload["dev"]:  # a paragraph run scores dev once, at the end
                dev = ", ".join(f"{k} {v:.2f}" for k, v in sorted(payload["dev"].items()) if not k.endswith("medr"))
                bar.write(f"epoch {payload['epoch']}: {dev}", file=self.stderr)

        try:
            finished = services.training_run_execute(run.pk, on_progress=on_progress)
        finally:
            bar.close()
        if finished is None:
            raise CommandError("Another worker took this run over.")
        run = finished
        self._report(run, opts)
        if run.status != "succeeded":
            raise CommandError(f"Run {run.pk} {run.status}: {run.error}")
        if opts["promote"]:
            try:
                switch = model_version_promote(version=run.model_version, background=False, force=opts["force"])
            except NeedsConfirmation as exc:
                raise CommandError(f"{exc.message} (run again with --force, or promote it from the admin)") from exc
            self.stdout.write(f"Promotion {switch.status}: {run.model_version.name} is now active.")

    def _report(self, run, opts) -> None:
        version = run.model_version
        body = {"run": run.pk, "status": run.status, "epochs": run.epoch, "steps": run.step,
                "model_version": version.pk if version else None, "name": version.name if version else None,
                "directory": version.directory if version else None,
                "dev": (version.metrics or {}).get("dev") if version else None,
                "compared_with": (version.metrics or {}).get("compared_with") if version else None}
        if opts["json"]:
            self.stdout.write(json.dumps(body, indent=1))
        elif version:
            dev = body["dev"] or {}
            self.stdout.write(f"Run {run.pk} succeeded: candidate {version.name} (v{version.pk}) in "
                              f"{version.directory}; dev " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(dev.items())))
