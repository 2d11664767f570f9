"""Compute and store the Flickr8k encoder features every other bench/trainer reads.

Usage (from the repo root; resumable: a rerun encodes only what is missing):

    .venv/bin/python bench/cache_flickr8k.py [--data ../shared/data/flickr8k] \
        [--out var/cache/flickr8k] [--limit N] [--threads 2]

Writes under --out (see var/cache/flickr8k/FORMAT.md, written by this script):
  manifest.json                    splits, captions per image (token-file order), identities
  image/orig                       pooled (1280) + logits (1000) + spatial (49, 1280)
  image/flip                       pooled + spatial of the horizontal mirror
  image/crop_tl, image/crop_br     pooled of two 0.875 corner crops
  text/sentence                    MiniLM sentence vectors (384), L2-normalised
  text/states_l4                   MiniLM layer-4 token states (T_i, 384), ragged
and prints images/s and captions/s per stage (also stored in manifest.json "timings").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.batch_encode import encode_images  # noqa: E402
from embeddings.ml.feature_cache import FeatureCache, atomic_write_bytes  # noqa: E402
from embeddings.ml.image_encoder import ImageEncoder  # noqa: E402
from embeddings.ml.text_encoder import TextEncoder  # noqa: E402

STATES_LAYER = 4  # cache the layer-4 output: a trainer can fine-tune layers 5 and 6 from it
IMAGE_STAGES = {
    # view -> {field: per-image shape}
    "orig": {"pooled": (1280,), "logits": (1000,), "spatial": (49, 1280)},
    "flip": {"pooled": (1280,), "spatial": (49, 1280)},
    "crop_tl": {"pooled": (1280,)},
    "crop_br": {"pooled": (1280,)},
}
TEXT_CHUNK = 2048  # captions per cache shard; bounds RAM for token states


def read_flickr8k(data: Path, limit: int | None) -> dict:
    """Splits (file lists in split-file order) and captions per image in token-file order."""
    splits = {
        name: (data / f"Flickr_8k.{name}Images.txt").read_text().split()
        for name in ("train", "dev")
    }
    if limit:
        splits = {k: v[:limit] for k, v in splits.items()}
    wanted = {f for files in splits.values() for f in files}
    captions: dict[str, list[list[str]]] = defaultdict(list)
    for line in (data / "Flickr8k.token.txt").read_text().splitlines():
        key, caption = line.split("\t", 1)
        image = key.split("#")[0]
        if image in wanted:
            captions[image].append([key, caption.strip()])
    missing = wanted - set(captions)
    if missing:
        raise ValueError(f"{len(missing)} images have no captions, e.g. {sorted(missing)[0]}")
    return {"splits": splits, "captions": dict(captions)}


def progress_printer(label: str):
    started = time.perf_counter()

    def report(done: int, total: int | None) -> None:
        if done and (done % 512 < 32 or done == total):
            rate = done / (time.perf_counter() - started)
            print(f"  {label}: {done}/{total} ({rate:.1f}/s)", flush=True)

    return report


def cache_images(
    out: Path, data: Path, files: list[str], encoder: ImageEncoder, views: list[str]
) -> dict:
    timings = {}
    paths = [data / "images" / f for f in files]
    for view in views:
        fields = IMAGE_STAGES[view]
        cache = FeatureCache(
            out / "image" / view, encoder_identity=encoder.identity, fields=fields,
            meta={"view": view, "model": "efficientnet-lite0"},
        )
        wanted = tuple(fields)
        mapper = lambda x, wanted=wanted: encoder.encode(x, fields=wanted)  # noqa: E731
        report = encode_images(
            paths, mapper, cache, batch_size=32, view=view, flush_every=1024,
            on_progress=progress_printer(f"image/{view}"),
        )
        rate = report.encoded / report.seconds if report.encoded else None
        print(f"image/{view}: {report.encoded} encoded, {report.skipped} cached, "
              f"{report.seconds:.1f}s, images/s={rate}", flush=True)
        if report.encoded:  # a resumed run keeps the timing of the run that did the work
            timings[f"image/{view}"] = {"encoded": report.encoded, "seconds": report.seconds,
                                        "images_per_s": rate}
    return timings


def cache_texts(out: Path, captions: dict[str, list[list[str]]], encoder: TextEncoder) -> dict:
    pairs = [pair for image in sorted(captions) for pair in captions[image]]
    sentence = FeatureCache(out / "text" / "sentence", encoder_identity=encoder.identity,
                            fields={"sentence": (384,)}, meta={"normalized": True})
    states = FeatureCache(out / "text" / f"states_l{STATES_LAYER}",
                          encoder_identity=encoder.identity, fields={"states": (None, 384)},
                          meta={"layer": STATES_LAYER})
    todo = [p for p in pairs if p[0] not in sentence or p[0] not in states]
    started, done = time.perf_counter(), 0
    for start in range(0, len(todo), TEXT_CHUNK):
        chunk = todo[start : start + TEXT_CHUNK]
        keys, texts = [k for k, _ in chunk], [t for _, t in chunk]
        vecs, hidden = encoder.encode_with_states(texts, STATES_LAYER, batch_size=128)
        new_s = [i for i, k in enumerate(keys) if k not in sentence]
        new_h = [i for i, k in enumerate(keys) if k not in states]
        sentence.add([keys[i] for i in new_s], {"sentence": vecs[new_s].numpy()})
        states.add([keys[i] for i in new_h], {"states": [hidden[i].numpy() for i in new_h]})
        done += len(chunk)
        rate = done / (time.perf_counter() - started)
        print(f"  text: {done}/{len(todo)} ({rate:.1f} captions/s)", flush=True)
    seconds = time.perf_counter() - started
    rate = done / seconds if done else None
    print(f"text: {done} encoded, {len(pairs) - len(todo)} cached, {seconds:.1f}s, "
          f"captions/s={rate}", flush=True)
    if not done:
        return {}
    return {"text": {"encoded": done, "seconds": seconds, "captions_per_s": rate}}


FORMAT_MD = """# Flickr8k feature cache: how to read it

Written by `bench/cache_flickr8k.py` (rerun it to resume or rebuild; do not write here
yourself). Every folder below is one `embeddings.ml.feature_cache.FeatureCache`:
`index.json` + float16 `.npy` shards with sha256 checksums, one encoder identity each.

## manifest.json

- `splits`: `{"train": [6000 file names], "dev": [1000 file names]}` in split-file order.
- `captions`: `{file name: [[caption key, caption], ...]}`, 5 per image in
  Flickr8k.token.txt order; caption key = `"<file>#<n>"` exactly as in the token file.
- `image_encoder_identity`, `text_encoder_identity`: pass these to `FeatureCache`.
- `states_layer`: 4; `image_views`: fields per view; `timings`: images/s, captions/s.

## Image features (keys: file name, e.g. `1000268201_693b08cb0e.jpg`)

| folder | field: per-key shape | what |
| --- | --- | --- |
| image/orig | pooled: (1280,) | EfficientNet-Lite0 global average of the last feature map |
| | logits: (1000,) | ImageNet-1k logits (softmax -> class probs; class names in embeddings/ml/data) |
| | spatial: (49, 1280) | the 7x7 last feature map, row-major (cell = row * 7 + col) |
| image/flip | pooled, spatial | same for the horizontally mirrored image |
| image/crop_tl | pooled | 196-px top-left corner crop resized to 224 |
| image/crop_br | pooled | 196-px bottom-right corner crop resized to 224 |

Features are NOT L2-normalised (ReLU6 outputs, values in [0, 6]).

## Text features (keys: caption key, e.g. `1000268201_693b08cb0e.jpg#0`)

| folder | field: per-key shape | what |
| --- | --- | --- |
| text/sentence | sentence: (384,) | all-MiniLM-L6-v2 mean-pooled, L2-normalised (as float16) |
| text/states_l4 | states: (T_i, 384), ragged | MiniLM layer-4 output tokens incl. [CLS]/[SEP], no padding |

`TextEncoder.forward_from(pad_states(states), mask, layer=4)` runs layers 5-6 and pools:
fine-tune the top 2 layers from these without re-running the bottom 4.

## Reading

```python
import json, numpy as np
from embeddings.ml.feature_cache import FeatureCache
root = "var/cache/flickr8k"
m = json.load(open(f"{root}/manifest.json"))
img = FeatureCache(f"{root}/image/orig", encoder_identity=m["image_encoder_identity"])
x = img.get(m["splits"]["dev"], fields=["pooled"], dtype=np.float32)["pooled"]  # (1000, 1280)
txt = FeatureCache(f"{root}/text/sentence", encoder_identity=m["text_encoder_identity"])
keys = [k for f in m["splits"]["dev"] for k, _ in m["captions"][f]]           # 5000 keys
t = txt.get(keys, dtype=np.float32)["sentence"]                               # (5000, 384)
```

`get` returns rows in the order asked, raises `MissingKeys` (with `.keys`) for keys
not cached yet (the script may still be running: check `FeatureCache.missing(keys)`), and
`CorruptShard` / `IdentityMismatch` for bad shards or other encoders. Shards are
memory-mapped; `spatial` for all 7,000 images is ~0.9 GB as float16, so ask only for what
you need (or pass `dtype=None` to keep float16).
"""


def results_markdown(manifest: dict, command: str) -> str:
    """The bench/results section: throughput of each stage as recorded in the manifest."""
    lines = [
        "## Flickr8k feature cache (EfficientNet-Lite0 + all-MiniLM-L6-v2, CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: 2-core x86_64 CPU shared with ~5 other agents' jobs (load average 3-13 "
        f"during the run), no GPU; torch threads {manifest.get('torch_threads', 2)}; "
        "batch 32 images / 128 captions. One run per stage, so no median: the rates swing "
        "with the other jobs' load and are lower bounds for an idle machine.",
        "",
        "| stage | items | seconds | rate |",
        "| --- | --- | --- | --- |",
    ]
    for stage, t in manifest.get("timings", {}).items():
        rate = t.get("images_per_s") or t.get("captions_per_s")
        unit = "captions/s" if "captions_per_s" in t else "images/s"
        rate_text = f"{rate:.1f} {unit}" if rate else "n/a"
        lines.append(f"| {stage} | {t['encoded']} | {t['seconds']:.0f} | {rate_text} |")
    lines += [
        "",
        "`image/*` rows include JPEG decoding and preprocessing; `text` is one MiniLM pass "
        "giving both sentence vectors and layer-4 token states. Reading back: "
        "var/cache/flickr8k/FORMAT.md.",
        "",
    ]
    return "\n".join(lines)


def write_manifest(out: Path, manifest: dict) -> None:
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "cache" / "flickr8k")
    parser.add_argument("--limit", type=int, default=None, help="images per split (smoke runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    manifest = read_flickr8k(args.data, args.limit)
    image_encoder = ImageEncoder()
    text_encoder = TextEncoder()
    manifest.update({
        "format_version": 1,
        "image_encoder_identity": image_encoder.identity,
        "text_encoder_identity": text_encoder.identity,
        "states_layer": STATES_LAYER,
        "image_views": {view: list(fields) for view, fields in IMAGE_STAGES.items()},
    })
    previous = args.out / "manifest.json"
    timings = json.loads(previous.read_text()).get("timings", {}) if previous.is_file() else {}
    manifest["timings"] = timings
    write_manifest(args.out, manifest)  # early, so readers can find splits while we encode
    atomic_write_bytes(args.out / "FORMAT.md", FORMAT_MD.encode())

    files = manifest["splits"]["dev"] + manifest["splits"]["train"]
    # Stage order: what the other trainers need first (orig, captions), then augmentations.
    timings.update(cache_images(args.out, args.data, files, image_encoder, ["orig"]))
    write_manifest(args.out, manifest)
    if not args.skip_text:
        timings.update(cache_texts(args.out, manifest["captions"], text_encoder))
        write_manifest(args.out, manifest)
    augment = [view for view in IMAGE_STAGES if view != "orig"]
    timings.update(cache_images(args.out, args.data, files, image_encoder, augment))
    manifest["torch_threads"] = args.threads
    write_manifest(args.out, manifest)
    results = REPO / "bench" / "results" / "feature_cache.md"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(results_markdown(manifest, ".venv/bin/python bench/cache_flickr8k.py"))
    print("done", flush=True)


if __name__ == "__main__":
    main()
