"""Score saved caption-generator checkpoints on Flickr8k dev with several decoding settings.

Usage (from the repo root):

    .venv/bin/python bench/eval_captioner_flickr8k.py --checkpoint var/models/captioner-flickr8k \
        [--checkpoint another ...] [--beams 3,5] [--length-penalties 0,0.5] [--no-repeat 0,2] \
        [--tta] [--full]

Several checkpoints are ensembled (averaged word distributions). ``--tta`` also averages over
the original and the horizontally flipped features. Prints quick BLEU-4/CIDEr-D (simple
tokenizer) for every setting; ``--full`` adds the full COCO evaluation (PTB tokenizer, METEOR)
of the best setting by BLEU-4. Tuning and reporting split: dev.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddings.ml.caption_decoding import Ensemble  # noqa: E402
from embeddings.ml.caption_generator import load_captioner  # noqa: E402
from training.ml.caption_metrics import caption_scores  # noqa: E402
from training.ml.caption_task import decode_split  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from train_captioner_flickr8k import load_split  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, action="append", required=True)
    p.add_argument("--cache", type=Path, default=REPO / "var/cache/flickr8k")
    p.add_argument("--beams", default="3,5")
    p.add_argument("--length-penalties", default="0,0.5")
    p.add_argument("--no-repeat", default="0")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gens = [load_captioner(c) for c in args.checkpoint]
    vocab = gens[0].vocab
    if any(g.vocab.words != vocab.words for g in gens):
        raise SystemExit("checkpoints must share one vocabulary to be ensembled")
    members = [m for g in gens for m in (g.decoder.members if isinstance(g.decoder, Ensemble) else [g.decoder])]
    manifest = json.loads((args.cache / "manifest.json").read_text())
    spatial = gens[0].needs_spatial
    dev = load_split(args.cache, manifest, "dev", ["orig", "flip"] if args.tta else ["orig"], spatial=spatial)
    refs = dict(zip(dev.keys, dev.captions))
    variants = [("", Ensemble(members).eval() if len(members) > 1 else members[0], 0)]
    if args.tta:
        variants.append((" +TTA", Ensemble([m for m in members for _ in range(2)], views=[0, 1] * len(members)), None))
    results = []
    for tag, decoder, view in variants:
        for beam in [int(b) for b in args.beams.split(",")]:
            for alpha in [float(a) for a in args.length_penalties.split(",")]:
                for ngram in [int(n) for n in args.no_repeat.split(",")]:
                    t0 = time.perf_counter()
                    hyps = decode_split(decoder, dev, vocab, beam_size=beam, length_penalty=alpha,
                                        no_repeat_ngram_size=ngram, batch_size=100, view=view)
                    secs = time.perf_counter() - t0
                    s = caption_scores(hyps, refs, tokenizer="simple", meteor=False)
                    results.append((s["bleu_4"], tag, beam, alpha, ngram, hyps, decoder, view))
                    print(f"{len(members)} model(s){tag} beam {beam} alpha {alpha} no-repeat {ngram}: "
                          f"BLEU-4 {s['bleu_4']:.2f} CIDEr-D {s['cider_d']:.1f} ({secs:.0f}s)", flush=True)
    if args.full:
        best = max(results, key=lambda r: r[0])
        full = caption_scores(best[5], refs, tokenizer="ptb", meteor=True)
        print(f"full eval{best[1]} beam {best[2]} alpha {best[3]} no-repeat {best[4]}: {json.dumps(full)}")


if __name__ == "__main__":
    main()
