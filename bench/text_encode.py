"""Query-text encoding cost: the transformers forward vs Loupe's `bert_inference`, and batch sizes.

Usage: .venv/bin/python bench/text_encode.py [--texts 300] [--threads 1] [--rounds 3]

Texts: Flickr8k dev captions (one per image, from var/cache/flickr8k/manifest.json when it
exists, else from ../shared/data/flickr8k). Per text, one at a time (the search-request
shape): the transformers module forward vs `bert_inference` (the path `TextEncoder.encode`
takes without gradients), interleaved text by text in each round; then `TextEncoder.encode`
over batches of 1, 2, 4, 8 and 16 texts (what the search micro-batcher runs when request
threads encode together). Prints medians (over rounds of per-round medians) and checks that
both forwards give the same vectors.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddings.ml.text_encoder import TextEncoder, bert_inference  # noqa: E402


def dev_captions(n: int) -> list[str]:
    manifest = REPO / "var" / "cache" / "flickr8k" / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        return [m["captions"][f][0][1] for f in m["splits"]["dev"][:n]]
    data = REPO.parent / "shared" / "data" / "flickr8k"
    dev = set((data / "Flickr_8k.devImages.txt").read_text().split())
    out, seen = [], set()
    for line in (data / "Flickr8k.token.txt").read_text().splitlines():
        key, text = line.split("\t", 1)
        image = key.split("#")[0]
        if image in dev and image not in seen:
            seen.add(image)
            out.append(text.strip())
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = TextEncoder()
    texts = dev_captions(args.texts)
    hf_r, lean_r = [], []
    with torch.no_grad():
        for _ in range(args.rounds):
            hf, lean = [], []
            for text in texts:
                batch = enc.tokenize([text])
                t = time.perf_counter()
                enc.model(**batch)
                hf.append(time.perf_counter() - t)
                t = time.perf_counter()
                bert_inference(enc.model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                lean.append(time.perf_counter() - t)
            hf_r.append(statistics.median(hf))
            lean_r.append(statistics.median(lean))
        batch = enc.tokenize(texts[:64])
        diff = (enc.model(**batch).last_hidden_state - bert_inference(enc.model, **batch))
        diff = diff[batch["attention_mask"].bool()].abs().max().item()
    hf_ms, lean_ms = statistics.median(hf_r) * 1e3, statistics.median(lean_r) * 1e3
    print(f"one text per call, {len(texts)} texts x {args.rounds} rounds, {args.threads} thread(s): "
          f"transformers forward {hf_ms:.2f} ms, bert_inference {lean_ms:.2f} ms "
          f"({hf_ms / lean_ms:.2f}x); max abs difference of hidden states {diff:.1e}")
    for size in (1, 2, 4, 8, 16):
        per_round = []
        for _ in range(args.rounds):
            times = []
            for start in range(0, len(texts) - size + 1, size):
                t = time.perf_counter()
                enc.encode(texts[start:start + size])
                times.append(time.perf_counter() - t)
            per_round.append(statistics.median(times))
        ms = statistics.median(per_round) * 1e3
        print(f"TextEncoder.encode, batch {size:2d}: {ms:6.2f} ms per batch, {ms / size:5.2f} ms per text")


if __name__ == "__main__":
    main()
