"""Training data from collections: which images and captions a run uses, and their features.

A run's data is frozen the first time it starts (`dataset.json` in the run folder: image ids
and caption ids per split), so a resumed run (after its worker died) trains on exactly the
same rows in the same order, even if captions were added meanwhile, and its checkpoint fits.
Only human and imported captions are used; generated ones never train the models.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from django.db.models import Q

from embeddings.ml.atomic import atomic_write_bytes
from embeddings.models import Caption, Collection, Image
from training.encoders import Encoders

SNAPSHOT_FILE = "dataset.json"
SNAPSHOT_VERSION = 1
TRAIN_SOURCES = (Caption.Source.HUMAN, Caption.Source.IMPORTED)


class DatasetEmpty(ValueError):
    """A split has no usable images (none with a human or imported caption)."""


@dataclass(frozen=True)
class Split:
    image_ids: list[int]  # ordered by id
    caption_ids: list[int]  # ordered by (image id, caption id)
    caption_image: list[int]  # index into image_ids of each caption
    texts: list[str]

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def captions_per_image(self) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.image_ids]
        for idx, text in zip(self.caption_image, self.texts):
            out[idx].append(text)
        return out


# Images uploaded without a split (split "none": the usual case for a user's own photos) are
# divided by their content hash, so an image keeps its side for ever and every run of a
# collection is scored on the same dev images: sha256 starting with 0 or 1 (1 in 8) -> dev,
# the rest -> train. If that leaves no dev image at all, the unsplit image with the smallest
# sha256 is dev. Images marked train/dev/test keep their split; test is never trained on.
_HASHED_DEV = Q(image__sha256__startswith="0") | Q(image__sha256__startswith="1")


def _usable(ids: list[int]):
    return (Caption.objects.filter(image__collection_id__in=ids, source__in=TRAIN_SOURCES)
            .exclude(image__status=Image.Status.FAILED).exclude(text=""))


def _fallback_dev_image(ids: list[int]) -> int | None:
    """The unsplit image used as dev when no image is dev otherwise (tiny collections)."""
    usable = _usable(ids)
    unsplit = usable.filter(image__split=Image.Split.NONE)
    if usable.filter(Q(image__split=Image.Split.DEV) | (Q(image__split=Image.Split.NONE) & _HASHED_DEV)).exists():
        return None
    return unsplit.order_by("image__sha256").values_list("image_id", flat=True).first()


def split_query(collections: Iterable[Collection | int], split: str) -> Iterable[tuple[int, int, str]]:
    """(caption id, image id, text) of usable captions of one split, ordered."""
    ids = [c.pk if isinstance(c, Collection) else int(c) for c in collections]
    unsplit = Q(image__split=Image.Split.NONE)
    if split in (Image.Split.TRAIN, Image.Split.DEV):
        fallback = _fallback_dev_image(ids)
        if split == Image.Split.TRAIN:
            where = Q(image__split=split) | (unsplit & ~_HASHED_DEV)
            if fallback is not None:
                where &= ~Q(image_id=fallback)
        else:
            where = Q(image__split=split) | (unsplit & _HASHED_DEV)
            if fallback is not None:
                where |= Q(image_id=fallback)
    else:
        where = Q(image__split=split)
    return _usable(ids).filter(where).order_by("image_id", "id").values_list("id", "image_id", "text")


def split_counts(collections: Iterable[Collection | int]) -> dict[str, int]:
    """Images with usable captions per split (train, dev, test)."""
    cols = list(collections)
    return {s: len({img for _, img, _ in split_query(cols, s)}) for s in ("train", "dev", "test")}


def build_split(rows: Iterable[tuple[int, int, str]]) -> Split:
    image_ids: list[int] = []
    position: dict[int, int] = {}
    cap_ids, cap_img, texts = [], [], []
    for cap_id, img_id, text in rows:
        if img_id not in position:
            position[img_id] = len(image_ids)
            image_ids.append(img_id)
        cap_ids.append(cap_id)
        cap_img.append(position[img_id])
        texts.append(text)
    return Split(image_ids, cap_ids, cap_img, texts)


def snapshot(collections: Sequence[Collection | int], directory: Path,
             splits: Sequence[str] = ("train", "dev")) -> dict[str, Split]:
    """The run's splits: read from `directory/dataset.json`, or taken now and written there."""
    path = directory / SNAPSHOT_FILE
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: unknown snapshot version {data.get('version')!r}")
        return {name: _load_split(data["splits"][name]) for name in splits}
    out = {name: build_split(split_query(collections, name)) for name in splits}
    for name, split in out.items():
        if split.num_images == 0:
            raise DatasetEmpty(f"no {name} images with human or imported captions in the chosen collections")
    directory.mkdir(parents=True, exist_ok=True)
    body = {"version": SNAPSHOT_VERSION, "splits": {
        name: {"captions": [[c, s.image_ids[i]] for c, i in zip(s.caption_ids, s.caption_image)]}
        for name, s in out.items()}}
    atomic_write_bytes(path, json.dumps(body).encode())
    return out


def _load_split(data: dict) -> Split:
    pairs = data["captions"]  # [[caption id, image id], ...] in snapshot order
    texts = dict(Caption.objects.filter(pk__in=[c for c, _ in pairs]).values_list("id", "text"))
    kept = [(c, i, texts[c]) for c, i in pairs if c in texts]  # a deleted caption drops out
    return build_split(kept)


PhaseProgress = Callable[[str], Callable[[int, int], None] | None]  # phase name -> (done, total) callback


def _no_progress(phase: str) -> None:
    return None


def embedding_data(split: Split, encoders: Encoders, *, image_input: str, progress: PhaseProgress = _no_progress,
                   name: str = "train"):
    """EmbeddingData (one view: the plain image) for training.ml.embedding_task."""
    from training.ml.embedding_task import EmbeddingData

    field = "spatial" if image_input == "spatial" else "pooled"
    feats = encoders.image_features(split.image_ids, [field], progress(f"{name} image features"))[field]
    text = encoders.text_features(split.texts, progress(f"{name} caption vectors"))  # (M, 384)
    return EmbeddingData(
        image_feats=torch.from_numpy(np.ascontiguousarray(feats))[:, None],  # (N, 1, ...)
        text_feats=torch.from_numpy(np.asarray(text, np.float32)),
        text_image=torch.tensor(split.caption_image, dtype=torch.long),
    )


def caption_data(split: Split, encoders: Encoders, *, spatial: bool, progress: PhaseProgress = _no_progress,
                 name: str = "train"):
    """CaptionData (one view) for training.ml.caption_task."""
    from training.ml.caption_task import CaptionData

    fields = ["pooled", "spatial"] if spatial else ["pooled"]
    feats = encoders.image_features(split.image_ids, fields, progress(f"{name} image features"))
    return CaptionData(
        pooled=torch.from_numpy(np.ascontiguousarray(feats["pooled"]))[:, None],  # (N, 1, F)
        spatial=torch.from_numpy(np.ascontiguousarray(feats["spatial"]))[:, None] if spatial else None,
        captions=split.captions_per_image(),
        keys=[str(i) for i in split.image_ids],
    )
