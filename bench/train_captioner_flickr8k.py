"""Train the caption generator on cached Flickr8k features and score it on dev.

Usage (from the repo root, after bench/cache_flickr8k.py has filled var/cache/flickr8k):

    .venv/bin/python bench/train_captioner_flickr8k.py [--decoder attention] [--epochs 8] \
        [--batch-size 64] [--lr 2e-3] [--set model.hidden_dim=512 ...] [--views orig,flip] \
        [--seeds 0,1] [--average-last 0] [--beams 1,3,5] [--length-penalties 0,0.5] [--tta] \
        [--no-repeat 0,2] [--out var/models/captioner-flickr8k] [--results bench/results/captioner.md]

Trains one model per seed with the generic loop (training.ml.trainer; early stopping on dev
CIDEr-D with greedy decoding), optionally averages the last checkpoints, ensembles the seeds,
sweeps beam width / length penalty / no-repeat-n-gram on dev (quick BLEU/CIDEr with the simple
tokenizer), then scores the chosen settings (and greedy) with the full COCO evaluation: PTB
tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D against all five references. Saves the
checkpoint (with the chosen decoding settings) and writes a markdown section to --results.
Dev is both the tuning and the reporting split (there is no test split here).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddings.ml.caption_decoding import Ensemble  # noqa: E402
from embeddings.ml.caption_generator import DecodingConfig, save_captioner  # noqa: E402
from embeddings.ml.feature_cache import FeatureCache  # noqa: E402
from training.ml.caption_metrics import caption_scores  # noqa: E402
from training.ml.caption_task import CaptionData, CaptionTask, average_weights, decode_split  # noqa: E402
from training.ml.config import TrainConfig, apply_overrides  # noqa: E402
from training.ml.trainer import train  # noqa: E402

ANCHORS = [  # published Flickr8k TEST-split figures (ours are dev), BLEU/METEOR x100
    ("Show and Tell (Vinyals et al. 2015), GoogLeNet", "63", "41", "27", "-", "-", "-", "-"),
    ("Show, Attend and Tell soft (Xu et al. 2015), VGG", "67", "44.8", "29.9", "19.5", "18.93", "-", "-"),
    ("Show, Attend and Tell hard (Xu et al. 2015), VGG", "67", "45.7", "31.4", "21.3", "20.30", "-", "-"),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=REPO / "var/cache/flickr8k")
    p.add_argument("--decoder", choices=["attention", "show_tell"], default="attention")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="TrainConfig override key=value")
    p.add_argument("--views", default="orig,flip", help="cached training views (view 0 = orig is used on dev)")
    p.add_argument("--seeds", default="0,1", help="comma list; several seeds are ensembled")
    p.add_argument("--average-last", type=int, default=0, help="also try averaging the last N epochs' weights")
    p.add_argument("--beams", default="1,3,5")
    p.add_argument("--length-penalties", default="0,0.5")
    p.add_argument("--no-repeat", default="0,2")
    p.add_argument("--tta", action="store_true",
                   help="also score test-time augmentation: average the original and flipped views")
    p.add_argument("--limit-train", type=int, default=0, help="debug: use only the first N training images")
    p.add_argument("--partial", action="store_true",
                   help="development only: train on the training images already cached in every view")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; on a loaded shared 2-core machine 1 was ~10x faster than 2")
    p.add_argument("--out", type=Path, default=REPO / "var/models/captioner-flickr8k")
    p.add_argument("--results", type=Path, default=REPO / "bench/results/captioner.md")
    return p.parse_args()


def load_split(cache: Path, manifest: dict, split: str, views: list[str], *, spatial: bool,
               limit: int = 0, partial: bool = False) -> CaptionData:
    """Pooled (N, V, F) and spatial (N, V, 49, F) float16 features plus raw captions."""
    keys = manifest["splits"][split]
    identity = manifest["image_encoder_identity"]
    if partial:  # the cache may still be filling: keep what every view already has
        caches = [FeatureCache(cache / "image" / v, encoder_identity=identity) for v in views]
        keys = [k for k in keys if all(k in c for c in caches)]
    keys = keys[: limit or None]
    pooled, cells = [], []
    for view in views:
        fields = ["pooled", "spatial"] if spatial else ["pooled"]
        got = FeatureCache(cache / "image" / view, encoder_identity=identity).get(keys, fields=fields)
        pooled.append(torch.from_numpy(got["pooled"]))
        if spatial:
            cells.append(torch.from_numpy(got["spatial"]))
    captions = [[c for _, c in manifest["captions"][k]] for k in keys]
    return CaptionData(pooled=torch.stack(pooled, dim=1), spatial=torch.stack(cells, dim=1) if spatial else None,
                       captions=captions, keys=keys)


def train_seed(args: argparse.Namespace, config: TrainConfig, train_data: CaptionData, dev_data: CaptionData,
               seed: int, vocab=None) -> tuple[CaptionTask, dict]:
    loop = dataclasses.replace(config.loop, seed=seed)
    task = CaptionTask(config.model, config.task, batch_size=loop.batch_size, train=train_data, dev=dev_data,
                       vocab=vocab, seed=seed, epochs=loop.epochs)

    def on_event(name: str, payload: dict) -> None:
        if name == "epoch":
            dev = payload["dev"]
            print(f"  seed {seed} epoch {payload['epoch']}: loss {payload['train'].get('caption_loss', 0):.3f} "
                  f"dev BLEU-4 {dev.get('bleu_4', 0):.2f} CIDEr-D {dev.get('cider_d', 0):.1f} "
                  f"len {dev.get('mean_length', 0):.1f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train(loop, task, device="cpu", on_event=on_event)
    info = {"seed": seed, "wall_s": result.wall_s, "cpu_s": time.process_time() - cpu0, "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "best": result.best_metrics, "status": result.status}
    print(f"  seed {seed}: {result.status} after {result.epochs} epochs, best epoch {result.best_epoch}, "
          f"{result.wall_s:.0f}s", flush=True)
    return task, info


def maybe_average(task: CaptionTask, last: int, dev_data: CaptionData) -> tuple[torch.nn.Module, str]:
    """The best-epoch model, or the average of the last ``last`` epochs if it scores higher on dev."""
    model = task.model
    if last < 2 or len(task.snapshots) < 2:
        return model, "best epoch"
    refs = dict(zip(dev_data.keys, dev_data.captions))
    best = caption_scores(decode_split(model, dev_data, task.vocab), refs, tokenizer="simple", meteor=False)
    averaged = type(model)(model.config)
    averaged.load_state_dict(average_weights([w for _, w in task.snapshots[-last:]]))
    avg = caption_scores(decode_split(averaged, dev_data, task.vocab), refs, tokenizer="simple", meteor=False)
    print(f"  greedy CIDEr-D best epoch {best['cider_d']:.1f} vs average of last {last} {avg['cider_d']:.1f}")
    if avg["cider_d"] > best["cider_d"]:
        return averaged.eval(), f"average of last {min(last, len(task.snapshots))} epochs"
    return model, "best epoch"


def sweep(decoder: torch.nn.Module, dev_data: CaptionData, vocab, args: argparse.Namespace) -> list[dict]:
    """Quick dev scores for every decoding setting (simple tokenizer, no METEOR)."""
    refs = dict(zip(dev_data.keys, dev_data.captions))
    rows = []
    grid = itertools.product([int(b) for b in args.beams.split(",")],
                             [float(a) for a in args.length_penalties.split(",")],
                             [int(n) for n in args.no_repeat.split(",")])
    for beam, alpha, ngram in grid:
        if beam == 1 and (alpha != 0.0 or ngram != 0):
            continue
        t0 = time.perf_counter()
        hyps = decode_split(decoder, dev_data, vocab, beam_size=beam, length_penalty=alpha,
                            no_repeat_ngram_size=ngram, batch_size=100)
        secs = time.perf_counter() - t0
        scores = caption_scores(hyps, refs, tokenizer="simple", meteor=False)
        rows.append({"beam": beam, "alpha": alpha, "ngram": ngram, "decode_s": secs, **scores})
        print(f"  beam {beam} alpha {alpha} no-repeat {ngram}: BLEU-4 {scores['bleu_4']:.2f} "
              f"CIDEr-D {scores['cider_d']:.1f} ({secs:.1f}s)", flush=True)
    return rows


def full_eval(decoder: torch.nn.Module, dev_data: CaptionData, vocab, beam: int, alpha: float,
              ngram: int, view: int | None = 0) -> tuple[dict, dict[str, str], float]:
    refs = dict(zip(dev_data.keys, dev_data.captions))
    t0 = time.perf_counter()
    hyps = decode_split(decoder, dev_data, vocab, beam_size=beam, length_penalty=alpha,
                        no_repeat_ngram_size=ngram, batch_size=100, view=view)
    secs = time.perf_counter() - t0
    return caption_scores(hyps, refs, tokenizer="ptb", meteor=True), hyps, secs


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    manifest = json.loads((args.cache / "manifest.json").read_text())
    spatial = args.decoder == "attention"
    train_data = load_split(args.cache, manifest, "train", args.views.split(","), spatial=spatial,
                            limit=args.limit_train, partial=args.partial)
    dev_data = load_split(args.cache, manifest, "dev", ["orig", "flip"] if args.tta else ["orig"], spatial=spatial)
    load_s = time.perf_counter() - t_start
    print(f"loaded features in {load_s:.0f}s: train {tuple(train_data.pooled.shape)}, dev {dev_data.num_images}")
    config = apply_overrides(TrainConfig.default("captioner"), [
        f"model.decoder={args.decoder}", f"loop.epochs={args.epochs}", f"loop.batch_size={args.batch_size}",
        f"loop.lr={args.lr}", "loop.early_stop_metric=cider_d", f"task.keep_snapshots={args.average_last > 1}",
        *args.overrides])
    t_train, cpu_train = time.perf_counter(), time.process_time()
    tasks, infos, vocab = [], [], None
    for seed in [int(s) for s in args.seeds.split(",")]:
        task, info = train_seed(args, config, train_data, dev_data, seed, vocab)
        vocab = task.vocab  # one vocabulary for all ensemble members
        model, info["weights"] = maybe_average(task, args.average_last, dev_data)
        tasks.append((task, model))
        infos.append(info)
    train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - cpu_train
    models = [m.eval() for _, m in tasks]
    decoder = models[0] if len(models) == 1 else Ensemble(models).eval()
    rows = sweep(decoder, dev_data, vocab, args)
    best = max((r for r in rows if r["beam"] > 1), key=lambda r: r["bleu_4"], default=rows[0])
    finals = []
    settings = [(1, 0.0, 0)] + ([(best["beam"], best["alpha"], best["ngram"])] if best["beam"] > 1 else [])
    runs = [(decoder, 0, s_, "") for s_ in settings]
    if args.tta:
        tta = Ensemble([m for m in models for _ in range(2)], views=[0, 1] * len(models)).eval()
        runs.append((tta, None, settings[-1], ", flip TTA"))
    for dec, view, (beam, alpha, ngram), tag in runs:
        scores, hyps, secs = full_eval(dec, dev_data, vocab, beam, alpha, ngram, view=view)
        finals.append({"beam": beam, "alpha": alpha, "ngram": ngram, "decode_s": secs, "scores": scores,
                       "tag": tag, "examples": [(k, hyps[k]) for k in dev_data.keys[:5]]})
        print(f"full eval beam {beam} alpha {alpha} no-repeat {ngram}{tag}: {json.dumps(scores)}", flush=True)
    config = dataclasses.replace(config, model=tasks[0][0].model_config)  # with the real vocab_size
    decoding = DecodingConfig(beam_size=best["beam"], length_penalty=best["alpha"], no_repeat_ngram_size=best["ngram"])
    path = save_captioner(args.out, decoder, vocab, decoding=decoding,
                          extra_meta={"train_config": config.to_dict(), "trained_on": "flickr8k-train",
                                      "dev_scores": finals[len(settings) - 1]["scores"], "seeds": args.seeds})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total_s = time.perf_counter() - t_start
    report = dict(args=vars(args), config=config.to_dict(), infos=infos, rows=rows, finals=finals,
                  load_s=load_s, train_s=train_s, train_cpu_s=train_cpu_s, total_cpu_s=time.process_time(),
                  total_s=total_s, peak_mb=peak_mb, checkpoint=str(path),
                  vocab_size=len(vocab), command=" ".join([".venv/bin/python", *sys.argv]))
    write_results(args.results, report)
    print(f"done in {total_s:.0f}s (training {train_s:.0f}s), peak RSS {peak_mb:.0f} MB, checkpoint {path}")


def write_results(path: Path, r: dict) -> None:
    """Markdown section: results next to the published anchors, settings, timings, sweep."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.with_suffix(".json")).write_text(json.dumps(r, indent=1, default=str))
    lines = ["## Caption generator on Flickr8k (dev split)", "",
             f"Command: `{r['command']}`", "",
             f"Machine: {platform.machine()} CPU, {r['args']['threads']} torch threads, no GPU "
             "(shared with other jobs; wall times are what this run saw).", "",
             "| model | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr-D |",
             "|---|---|---|---|---|---|---|---|"]
    for f in r["finals"]:
        s = f["scores"]
        name = (f"ours, {r['args']['decoder']}, greedy" if f["beam"] == 1 else
                f"ours, {r['args']['decoder']}, beam {f['beam']}, length penalty {f['alpha']}, "
                f"no-repeat {f['ngram']}") + f["tag"]
        lines.append(f"| {name} (dev) | " + " | ".join(f"{s[k]:.1f}" for k in
                     ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")) + " |")
    for a in ANCHORS:
        lines.append(f"| {a[0]} (test) | " + " | ".join(a[1:]) + " |")
    per_seed = ", ".join(f"seed {i['seed']}: {i['epochs']} epochs, best {i['best_epoch']}, "
                         f"{i['wall_s']:.0f} s wall / {i['cpu_s']:.0f} s CPU, {i['weights']}" for i in r["infos"])
    lines += ["", f"- Training: {r['train_s']:.0f} s wall for {len(r['infos'])} model(s) ({per_seed}); "
              f"process CPU time for training {r['train_cpu_s']:.0f} s (the gap to wall time is other jobs' share "
              f"of the cores); feature loading {r['load_s']:.0f} s; whole script {r['total_s']:.0f} s wall, "
              f"{r['total_cpu_s']:.0f} s CPU.",
              f"- Peak memory (max RSS of the process): {r['peak_mb']:.0f} MB.",
              "- Dev decoding time (1,000 images): " + ", ".join(
                  f"beam {f['beam']}: {f['decode_s']:.1f} s" for f in r["finals"]) + ".",
              f"- Vocabulary: {r['vocab_size']} tokens. Config: `{json.dumps(r['config'])}`",
              f"- Checkpoint: `{r['checkpoint']}`.", "", "Decoding sweep on dev (simple tokenizer, no METEOR):", "",
              "| beam | length penalty | no-repeat | BLEU-4 | CIDEr-D | decode s |", "|---|---|---|---|---|---|"]
    lines += [f"| {w['beam']} | {w['alpha']} | {w['ngram']} | {w['bleu_4']:.2f} | {w['cider_d']:.1f} | "
              f"{w['decode_s']:.1f} |" for w in r["rows"]]
    lines += ["", "Examples (beam): " + "; ".join(f"{k}: \"{t}\"" for k, t in r["finals"][-1]["examples"]), ""]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
