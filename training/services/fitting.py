"""One training run's work, without the bookkeeping: data -> TrainTask -> trainer -> model files.

Shared by the in-process path (Celery task, `manage.py train`) and the torchrun ranks of a
multi-GPU run (training/ddp_entry.py). Returns a JSON-safe `FitOutcome` that the caller
turns into a ModelVersion.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from embeddings.ml.atomic import sha256_file
from embeddings.ml.caption_generator import DecodingConfig, save_captioner
from embeddings.ml.checkpoint import checkpoint_to_dict, save_checkpoint
from embeddings.models import ModelVersion
from project.exceptions import ApplicationError
from training import datasets
from training.encoders import Encoders
from training.ml.config import TrainConfig
from training.ml.trainer import EventFn, TrainResult

logger = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    status: str  # "succeeded" | "cancelled"
    stop_reason: str = ""  # "completed" | "early_stop" | "cancelled"
    directory: str = ""  # model folder relative to MODEL_DIR
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    dev_metrics: dict[str, float] = field(default_factory=dict)  # at the best epoch
    best_epoch: int | None = None
    epochs: int = 0
    steps: int = 0
    wall_s: float = 0.0
    dim: int = 0
    encoders: dict[str, str] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=dict)  # image / caption counts per split

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_dir(run_id: int) -> Path:
    return Path(settings.MODEL_DIR) / "runs" / str(run_id)


def ood_split(config: TrainConfig, log: Callable[[str], None] | None = None) -> datasets.Split | None:
    """The out-of-domain evaluation set named by ``task.ood_collection`` (every captioned image
    of its dev split), or None when the config names none or that collection is not there
    (an install that never imported it: logged, and the run is scored on dev alone)."""
    from embeddings.models import Collection

    name = getattr(config.task, "ood_collection", "") if config.kind == "embedding" else ""
    if not name:
        return None
    collection = Collection.objects.filter(name=name).order_by("pk").first()
    if collection is None:
        message = (f"out-of-domain collection {name!r} not found: scored on dev only "
                   "(bench/build_ood_set.py + import_dataset, docs/retraining.md)")
        logger.warning(message)
        if log is not None:
            log(message)
        return None
    split = datasets.build_split(datasets.split_query([collection], "dev"))
    if split.num_images == 0:
        raise datasets.DatasetEmpty(f"the out-of-domain collection {name!r} has no captioned dev images")
    return split


def prior_model_factory(encoders: Encoders):
    """make_model for the "prior" family: the frozen classifier and the class-name vectors
    (MiniLM vectors of the bare ImageNet class names, ConSE v0's DEFAULT_PROMPTS), from the
    same encoders and text cache as the training data."""
    import torch

    from embeddings.ml.conse import DEFAULT_PROMPTS, load_class_names
    from embeddings.ml.prior_heads import PriorEmbedding

    if DEFAULT_PROMPTS != ("{}",):  # class_vectors would prompt-average; keep the two identical
        raise RuntimeError("prior_model_factory assumes ConSE's bare class-name prompt")
    weight, bias = encoders.classifier()
    class_vecs = encoders.text_features(load_class_names())  # (1000, 384) unit vectors

    def make(cfg):
        return PriorEmbedding(cfg, class_vecs=torch.from_numpy(np.asarray(class_vecs, np.float32)),
                              fc_weight=torch.from_numpy(weight), fc_bias=torch.from_numpy(bias))

    return make


def phase_progress(on_event: EventFn | None) -> datasets.PhaseProgress:
    """Phase name -> a (done, total) callback that emits "prepare" events with a rate and an ETA,
    so a run shows what it is doing from its first second (features can take many minutes)."""
    def start(phase: str) -> Callable[[int, int], None] | None:
        if on_event is None:
            return None
        t0, first = time.monotonic(), [-1]

        def report(done: int, total: int) -> None:
            if first[0] < 0:
                first[0] = done  # what was cached already does not count towards the rate
            elapsed = time.monotonic() - t0
            rate = (done - first[0]) / elapsed if elapsed > 0 and done > first[0] else None
            eta = (total - done) / rate if rate else (0.0 if done >= total else None)
            on_event("prepare", {"phase": phase, "done": done, "total": total, "rate": rate, "eta_s": eta,
                                 "elapsed_s": elapsed})
        return report
    return start


def build_task(config: TrainConfig, splits: dict[str, datasets.Split], encoders: Encoders,
               ood: datasets.Split | None = None, on_event: EventFn | None = None):
    """The kind's TrainTask over cached features of the run's train and dev splits (+ the OOD set)."""
    progress = phase_progress(on_event)
    if config.kind == "embedding":
        from training.ml.embedding_task import EmbeddingTask

        make = datasets.embedding_data
        kw = {"image_input": config.model.image_input, "progress": progress}
        factory = prior_model_factory(encoders) if config.model.family == "prior" else None
        train = make(splits["train"], encoders, name="train", **kw)
        dev = make(splits["dev"], encoders, name="dev", **kw)
        extra = {"ood": make(ood, encoders, name="ood", **kw)} if ood is not None else None
        return EmbeddingTask(config.model, config.task, batch_size=config.loop.batch_size, train=train, dev=dev,
                             seed=config.loop.seed, make_model=factory, extra_dev=extra)
    from training.ml.caption_task import CaptionTask

    spatial = config.model.decoder == "attention"
    start = _initial_captioner(config.task.init_version, config.task.image_encoder)
    task = CaptionTask(config.model, config.task, batch_size=config.loop.batch_size,
                       train=datasets.caption_data(splits["train"], encoders, spatial=spatial, progress=progress,
                                                   name="train"),
                       dev=datasets.caption_data(splits["dev"], encoders, spatial=spatial, progress=progress,
                                                 name="dev"), seed=config.loop.seed,
                       vocab=start.vocab if start is not None else None)
    if start is not None:
        if task.model_config != start.config:
            mine, theirs = dataclasses.asdict(task.model_config), dataclasses.asdict(start.config)
            differ = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
            raise ApplicationError(f"task.init_version={config.task.init_version}: its architecture differs from "
                                   f"the run's model settings (run, version): {differ}")
        task.model.load_state_dict(start.decoder.state_dict())
    task.epochs_planned = config.loop.epochs
    return task


def _initial_captioner(version_id: int, image_encoder: str | None = None):
    """The CaptionGenerator a fine-tuning run starts from (task.init_version), or None; with
    `image_encoder`, the version must have been trained on that encoder's features."""
    if not version_id:
        return None
    from embeddings import runtime
    from embeddings.ml.caption_generator import load_captioner
    from embeddings.ml.caption_decoding import Ensemble

    version = ModelVersion.objects.filter(pk=version_id, kind=ModelVersion.Kind.CAPTIONER).first()
    if version is None:
        raise ApplicationError(f"task.init_version={version_id}: no captioner model version with that id")
    if image_encoder is not None and runtime.image_encoder_name(version) != image_encoder:
        raise ApplicationError(f"task.init_version={version_id} was trained on {runtime.image_encoder_name(version)} "
                               f"features, the run asks for {image_encoder}: set task.image_encoder to match")
    generator = load_captioner(runtime.version_path(version))
    if isinstance(generator.decoder, Ensemble):
        raise ApplicationError(f"task.init_version={version_id}: an ensemble cannot be fine-tuned")
    return generator


def fit(*, run_id: int, collection_ids: list[int], config: TrainConfig, encoders: Encoders,
        device: str, on_event: EventFn, should_stop: Callable[[], bool], log: Callable[[str], None],
        trainer: Callable[..., TrainResult] | None = None, write_files: bool = True) -> FitOutcome:
    """Train (resuming from the run's checkpoint if one exists) and write the model files."""
    from training.ml.trainer import train

    if config.kind == "paragraph":  # gensim, not the torch loop (training/services/paragraph_fit.py)
        from training.services.paragraph_fit import paragraph_fit

        return paragraph_fit(run_id=run_id, collection_ids=collection_ids, config=config, encoders=encoders,
                             on_event=on_event, should_stop=should_stop, log=log, write_files=write_files)
    directory = run_dir(run_id)
    splits = datasets.snapshot(collection_ids, directory)
    ood = ood_split(config, log)
    named = {**splits, **({"ood": ood} if ood is not None else {})}
    counts = {f"{name}_{what}": n for name, s in named.items()
              for what, n in (("images", s.num_images), ("captions", len(s.texts)))}
    log("data: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    task = build_task(config, splits, encoders, ood, on_event=on_event)
    result = (trainer or train)(config.loop, task, device=device, on_event=on_event,
                                checkpoint_dir=directory / "state", should_stop=should_stop)
    outcome = FitOutcome(status="cancelled" if result.status == "cancelled" else "succeeded",
                         stop_reason=result.status, dev_metrics=dict(result.best_metrics),
                         best_epoch=result.best_epoch, epochs=result.epochs, steps=result.steps,
                         wall_s=result.wall_s, data=counts)
    if outcome.status == "cancelled" or not write_files:
        return outcome
    if not outcome.dev_metrics and result.history:
        outcome.dev_metrics = dict(result.history[-1].get("dev") or {})
    outcome.encoders = encoders.identities()
    model_dir = directory / "model"
    meta = {"encoders": outcome.encoders, "dev_metrics": outcome.dev_metrics, "run_id": run_id,
            "train_config": config.to_dict()}
    if config.kind == "embedding":
        tensors, model_cfg = checkpoint_to_dict(task.model, config.model)
        save_checkpoint(model_dir, tensors=tensors, config=model_cfg, meta={"kind": "embedding", **meta})
        outcome.dim = config.model.dim
    else:
        # a fine-tuned captioner keeps the decoding tuned for the version it started from
        start = _initial_captioner(config.task.init_version)
        decoding = start.decoding if start is not None else DecodingConfig()
        save_captioner(model_dir, task.model, task.vocab, decoding=decoding, extra_meta=meta)
    outcome.directory = str(model_dir.relative_to(Path(settings.MODEL_DIR)))
    outcome.files = {p.name: sha256_file(p) for p in sorted(model_dir.iterdir())
                     if p.is_file() and not p.name.endswith(".part")}
    return outcome


def baseline_metrics(*, version: ModelVersion, run_id: int, encoders: Encoders) -> dict[str, float]:
    """An existing version's dev metrics on this run's dev split, scored the way the trainer
    scores the candidate (captioners: greedy decoding, simple tokenizer, no METEOR; paragraph
    models: training.ml.paragraph_task's protocol)."""
    from training.services.evaluation import captioner_evaluate, embedding_evaluate

    from training.models import TrainingRun

    dev = datasets.snapshot([], run_dir(run_id), splits=("dev",))["dev"]
    if version.kind == ModelVersion.Kind.PARAGRAPH:
        from training.services.paragraph_fit import paragraph_baseline

        run = TrainingRun.objects.filter(pk=run_id).first()
        held_out = TrainConfig.from_dict(run.config).task.held_out if run is not None and run.config else 2
        return paragraph_baseline(version=version, dev=dev, encoders=encoders, held_out=held_out)
    if version.kind == ModelVersion.Kind.EMBEDDING:
        metrics = embedding_evaluate(version=version, split=dev, encoders=encoders)
        run = TrainingRun.objects.filter(pk=run_id).first()
        ood = ood_split(TrainConfig.from_dict(run.config)) if run is not None and run.config else None
        if ood is not None:  # scored on the same OOD set as the candidate, same keys
            extra = embedding_evaluate(version=version, split=ood, encoders=encoders)
            metrics.update({f"ood_{k}": v for k, v in extra.items()})
            metrics["both_rsum"] = metrics["rsum"] + extra["rsum"]
        return metrics
    return captioner_evaluate(version=version, split=dev, encoders=encoders, full=False, beam_size=1)


