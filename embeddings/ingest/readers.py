"""Dataset readers for `manage.py import_dataset`: each turns a layout into ImportItems.

Readers only parse; storing goes through `embeddings.services.importing.dataset_import`, which uses the
same validation as every other entry point.
"""
from __future__ import annotations

import csv
import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
FORMATS = ("flickr8k", "coco", "csv", "folder")


class DatasetError(ValueError):
    """The dataset layout itself is unusable (missing caption file, bad JSON...)."""


@dataclass
class ImportItem:
    path: Path
    name: str
    captions: list[str] = field(default_factory=list)
    split: str = "none"


def read_dataset(path: Path, fmt: str, images_dir: Path | None = None) -> list[ImportItem]:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    readers = {"flickr8k": read_flickr8k, "coco": read_coco, "csv": read_csv, "folder": read_folder}
    if fmt not in readers:
        raise DatasetError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return readers[fmt](path, images_dir)


def read_flickr8k(root: Path, images_dir: Path | None = None) -> list[ImportItem]:
    """Flickr8k's original layout: Flickr8k.token.txt, Flickr_8k.{train,dev,test}Images.txt, images/."""
    token = root / "Flickr8k.token.txt"
    if not token.is_file():
        raise DatasetError(f"{token} not found (expected the Flickr8k layout).")
    folder = images_dir or next(
        (root / d for d in ("images", "Flicker8k_Dataset", "Flickr8k_Dataset") if (root / d).is_dir()), None)
    if folder is None:
        raise DatasetError(f"No image folder (images/ or Flicker8k_Dataset/) under {root}.")
    splits: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        listing = root / f"Flickr_8k.{split}Images.txt"
        if listing.is_file():
            for line in listing.read_text().split():
                splits[line.strip()] = split
    captions: OrderedDict[str, list[str]] = OrderedDict()
    for n, line in enumerate(token.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, text = line.partition("\t")
        if not sep:
            raise DatasetError(f"{token}:{n}: expected '<image>#<n><TAB><caption>'.")
        captions.setdefault(key.split("#", 1)[0], []).append(text.strip())
    return [
        ImportItem(path=folder / name, name=name, captions=caps, split=splits.get(name, "none"))
        for name, caps in captions.items()
    ]


def read_coco(path: Path, images_dir: Path | None = None) -> list[ImportItem]:
    """A COCO captions JSON (images + annotations) or a Karpathy dataset_*.json (with splits)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"Cannot read {path}: {exc}") from exc
    folder = images_dir or path.parent
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        by_id = {img["id"]: ImportItem(path=folder / img["file_name"], name=img["file_name"]) for img in data["images"]}
        for ann in data["annotations"]:
            if ann.get("image_id") in by_id:
                by_id[ann["image_id"]].captions.append(str(ann.get("caption", "")).strip())
        return list(by_id.values())
    if isinstance(data, dict) and isinstance(data.get("images"), list):  # Karpathy split file
        items = []
        for img in data["images"]:
            rel = Path(img.get("filepath", "")) / img["filename"]
            split = {"restval": "train", "val": "dev"}.get(img.get("split", "none"), img.get("split", "none"))
            caps = [s.get("raw", " ".join(s.get("tokens", []))).strip() for s in img.get("sentences", [])]
            items.append(ImportItem(path=folder / rel, name=img["filename"], captions=caps,
                                    split=split if split in ("train", "dev", "test") else "none"))
        return items
    raise DatasetError(f"{path} is neither a COCO captions file nor a Karpathy split file.")


def read_csv(path: Path, images_dir: Path | None = None) -> list[ImportItem]:
    """Rows of image,caption (header optional); several rows may name the same image."""
    folder = images_dir or path.parent
    items: OrderedDict[str, ImportItem] = OrderedDict()
    with path.open(newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or (n == 1 and [c.strip().lower() for c in row[:2]] == ["image", "caption"]):
                continue
            name = row[0].strip()
            item = items.setdefault(name, ImportItem(path=folder / name, name=name))
            if len(row) > 1 and row[1].strip():
                item.captions.append(row[1].strip())
    return list(items.values())


def read_folder(path: Path, images_dir: Path | None = None) -> list[ImportItem]:
    root = images_dir or path
    return [ImportItem(path=p, name=str(p.relative_to(root))) for p in _walk(root)]


def _walk(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            yield p
