"""One paragraph-vector run's work: documents -> Doc2Vec -> image map -> dev scores -> model folder.

Called by `fitting.fit` for the "paragraph" kind (Celery task, `manage.py train`, the admin's
Retrain form all end here). Progress goes through the same events as the torch trainer
(start, step, epoch, done, cancelled), so the run page, the API and the log show it the same
way: one "epoch" is one pass of one model over the documents (PV-DM's passes, then PV-DBOW's).

What the version holds (embeddings/ml/paragraph_io.py): the models, the image map, and one
unit vector per image of the run's collections at training time:
- train-split images with captions: their trained paragraph vector;
- every other image with human or imported captions (dev, test, unsplit): inferred from its
  captions, after the dev scores were taken;
- images without such captions: the image map applied to their pooled features, their scores
  lowered by the mapped vectors' hubness gap measured on dev (embeddings/ml/paragraph.py).
Images added after the run have no vector until the next run (a text query still ranks every
indexed image). Unlike the torch kinds, a run whose worker died starts again from the first
epoch (gensim keeps no resumable state; a Flickr8k run takes about a minute).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from django.conf import settings

from embeddings.ml.paragraph import (SOURCE_INFERRED, SOURCE_MAPPED, SOURCE_TRAINED, ImageMap, ParagraphSpace,
                                     ParagraphVectors, document_text, fit_image_map, train_paragraph_vectors)
from embeddings.ml.paragraph_io import ParagraphIndex, save_paragraph
from embeddings.models import Caption, Image, ModelVersion
from training import datasets
from training.encoders import Encoders
from training.ml.config import TrainConfig
from training.ml.paragraph_task import mapped_offset, paragraph_metrics
from training.ml.trainer import EventFn
from training.services.fitting import FitOutcome, run_dir

logger = logging.getLogger(__name__)


def _pooled(encoders: Encoders, image_ids: Sequence[int]) -> np.ndarray:
    if not image_ids:
        return np.zeros((0, 1280), np.float32)
    return np.asarray(encoders.image_features(list(image_ids), ["pooled"])["pooled"], np.float32)


def collection_documents(collection_ids: Sequence[int]) -> tuple[list[int], dict[int, list[str]]]:
    """(every usable image id of the collections, ascending; {image id: its human/imported
    captions in id order} for those that have any)."""
    ids = list(Image.objects.filter(collection_id__in=collection_ids).exclude(status=Image.Status.FAILED)
               .order_by("pk").values_list("pk", flat=True))
    captions: dict[int, list[str]] = {}
    rows = (Caption.objects.filter(image_id__in=ids, source__in=datasets.TRAIN_SOURCES).exclude(text="")
            .order_by("image_id", "pk").values_list("image_id", "text"))
    for image_id, text in rows:
        captions.setdefault(image_id, []).append(text)
    return ids, captions


def _progress(on_event: EventFn, passes: int, docs: int, log: Callable[[str], None]):
    state = {"step": 0, "t": time.monotonic()}

    def on_epoch(epoch: int, mode: str, alpha: float) -> None:
        state["step"] += 1
        now = time.monotonic()
        rate = docs / max(now - state["t"], 1e-9)
        state["t"] = now
        on_event("step", {"epoch": state["step"], "step": state["step"], "losses": {}, "lr": alpha,
                          "samples_per_s": rate})
        on_event("epoch", {"epoch": state["step"], "train": {"documents_per_s": rate}, "dev": {},
                           "improved": False})
        log(f"PV-{mode.upper()} epoch {epoch} done (pass {state['step']}/{passes}, alpha {alpha:.5f})")

    return on_epoch, state


def _index_vectors(pv: ParagraphVectors, space: ParagraphSpace, image_map: ImageMap, train_ids: list[int],
                   collection_ids: Sequence[int], encoders: Encoders) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image ids, unit vectors in `space`, sources) of every image of the collections (module doc)."""
    ids, captions = collection_documents(collection_ids)
    trained = dict(zip(train_ids, space(pv.docvecs())))
    texts = [i for i in ids if i not in trained and i in captions]
    bare = [i for i in ids if i not in trained and i not in captions]
    vectors = {i: trained[i] for i in ids if i in trained}
    if texts:
        vectors.update(zip(texts, space(pv.infer([document_text(captions[i]) for i in texts]))))
    if bare:
        logger.info("placing %d images without captions through the image map", len(bare))
        vectors.update(zip(bare, image_map(_pooled(encoders, bare))))
    source = {**{i: SOURCE_INFERRED for i in texts}, **{i: SOURCE_MAPPED for i in bare},
              **{i: SOURCE_TRAINED for i in trained}}
    order = [i for i in ids if i in vectors]
    dim = pv.dim
    return (np.asarray(order, np.int64),
            np.asarray([vectors[i] for i in order], np.float32).reshape(len(order), dim),
            np.asarray([source[i] for i in order], np.uint8))


def paragraph_fit(*, run_id: int, collection_ids: list[int], config: TrainConfig, encoders: Encoders,
                  on_event: EventFn, should_stop: Callable[[], bool], log: Callable[[str], None],
                  write_files: bool = True) -> FitOutcome:
    """Train, score on dev, build the image index and write the model folder."""
    started = time.monotonic()
    model_cfg, loop = config.model, config.loop
    directory = run_dir(run_id)
    splits = datasets.snapshot(collection_ids, directory)
    train, dev = splits["train"], splits["dev"]
    counts = {f"{name}_{what}": n for name, s in splits.items()
              for what, n in (("images", s.num_images), ("captions", len(s.texts)))}
    log("data: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    documents = [document_text(c) for c in train.captions_per_image()]
    passes = loop.epochs * len(model_cfg.modes)
    on_event("start", {"epochs": passes, "num_batches": 1, "total_steps": passes, "resumed_from_epoch": None,
                       "device": f"cpu (gensim, {model_cfg.workers} worker{'s' if model_cfg.workers > 1 else ''})"})
    on_epoch, state = _progress(on_event, passes, len(documents), log)
    pv = train_paragraph_vectors(documents, model_cfg, epochs=loop.epochs, alpha=loop.lr,
                                 min_alpha=loop.lr * loop.min_lr_ratio, seed=loop.seed,
                                 on_epoch=on_epoch, should_stop=should_stop)
    if pv is None:
        on_event("cancelled", {"epoch": state["step"], "step": state["step"]})
        return FitOutcome(status="cancelled", stop_reason="cancelled", epochs=state["step"], steps=state["step"],
                          wall_s=time.monotonic() - started, data=counts)
    log(f"vocabulary {pv.vocabulary()} words; fitting the image map on {train.num_images} train images")
    space = ParagraphSpace.of(pv.docvecs())
    targets = space(pv.docvecs())  # (N_train, D)
    image_map = fit_image_map(_pooled(encoders, train.image_ids), targets, ridge=model_cfg.map_ridge)

    def encode(texts: Sequence[str]) -> np.ndarray:
        return space(pv.infer(list(texts)))

    dev_pooled, dev_captions = _pooled(encoders, dev.image_ids), dev.captions_per_image()
    dev_metrics = paragraph_metrics(encode, image_map, dev_captions, dev_pooled, config.task.held_out)
    # The hubness gap of mapped vectors over real documents, measured on dev (never trained on).
    offset, gap = mapped_offset(encode, image_map, dev_captions, dev_pooled, targets)
    log(f"image map: mapped vectors' hubness gap on dev {gap:.3f}; their scores are lowered by {offset:.3f}")
    on_event("epoch", {"epoch": passes, "train": {}, "dev": dev_metrics, "improved": True})
    outcome = FitOutcome(status="succeeded", stop_reason="completed", dev_metrics=dev_metrics, best_epoch=passes,
                         epochs=passes, steps=passes, data=counts, dim=model_cfg.dim,
                         encoders=encoders.identities())
    if write_files:
        ids, vectors, source = _index_vectors(pv, space, image_map, train.image_ids, collection_ids, encoders)
        n_src = {name: int((source == code).sum()) for name, code in
                 (("trained", SOURCE_TRAINED), ("inferred", SOURCE_INFERRED), ("mapped", SOURCE_MAPPED))}
        log("index: " + ", ".join(f"{k} {v}" for k, v in n_src.items()))
        model_dir = directory / "model"
        index = ParagraphIndex(pv, space, image_map, ids, vectors, source, mapped_offset=offset,
                               meta={"run_id": run_id, "collection_ids": list(collection_ids),
                                     "train_config": config.to_dict(), "dev_metrics": dev_metrics,
                                     "encoders": outcome.encoders, "sources": n_src})
        outcome.files = save_paragraph(model_dir, index)
        outcome.directory = str(model_dir.relative_to(Path(settings.MODEL_DIR)))
        outcome.data = {**counts, **{f"index_{k}": v for k, v in n_src.items()}}
    outcome.wall_s = time.monotonic() - started
    on_event("done", {"status": "completed", "epochs": passes, "steps": passes, "wall_s": outcome.wall_s})
    return outcome


def paragraph_baseline(*, version: ModelVersion, dev: datasets.Split, encoders: Encoders,
                       held_out: int) -> dict[str, float]:
    """An existing paragraph version's scores on a run's dev split, by the same protocol."""
    from embeddings import runtime

    index = runtime.paragraph_for(version)
    return paragraph_metrics(index.encode, index.image_map, dev.captions_per_image(),
                             _pooled(encoders, dev.image_ids), held_out)


__all__ = ["collection_documents", "paragraph_baseline", "paragraph_fit"]
