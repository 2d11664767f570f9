"""Issue 20 side by side: every embedding variant on Flickr8k dev AND the out-of-domain dev set.

Usage (from the repo root, after bench/cache_flickr8k.py and bench/build_ood_set.py):

    OMP_NUM_THREADS=1 .venv/bin/python bench/prior_flickr8k.py --variant NAME [--set key=value ...] \
        [--encoder lite0|lite2|lite0+lite2] [--out var/models/prior/NAME] [--json-out FILE]
    OMP_NUM_THREADS=1 .venv/bin/python bench/prior_flickr8k.py --baselines   # ConSE v0, shipped, fusion

Everything is trained and scored from caches: the Flickr8k bench cache (var/cache/flickr8k;
pooled features of the original view, MiniLM sentence vectors), and this script's own cache
of the OOD set's features (var/ood/features-<encoder>.npz: pooled + logits of each image,
MiniLM vectors of its sentence, computed once). Variants are --set overrides of the product's
TrainConfig (the "embedding" kind); training is the product's EmbeddingTask + generic trainer,
so a variant here is exactly what `manage.py train --set ...` trains. Prints one JSON line per
result: {variant, flickr8k_dev: {...}, ood_dev: {...}, wall_s, sets}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddings.ml.conse import class_vectors, conse_image_vectors, load_class_names  # noqa: E402
from embeddings.ml.prior_heads import PriorEmbedding  # noqa: E402
from bench.cached_features import load_split  # noqa: E402
from training.ml.config import TrainConfig, apply_overrides  # noqa: E402
from training.ml.embedding_task import EmbeddingData, EmbeddingTask, split_metrics  # noqa: E402
from training.ml.retrieval_metrics import retrieval_metrics  # noqa: E402
from training.ml.trainer import train  # noqa: E402

PRIOR_DEFAULTS = [  # the ConSE-prior residual recipe; --set overrides any of it
    "model.family=prior", "model.dim=384", "model.head=mlp", "model.hidden=1024", "model.dropout=0.2",
    "model.init_temperature=0.05", "loop.epochs=10", "loop.lr=1e-3", "loop.weight_decay=0.05",
    "loop.patience=3", "loop.early_stop_metric=both_rsum", "task.positives=log_sum",
    "task.class_caption_weight=0.5", "task.residual_l2=0.0",
]


def load_ood(root: Path, encoder: str, image_enc, text_enc) -> dict[str, np.ndarray]:
    """{"pooled" (N, F), "logits" (N, 1000), "text" (N, 384), "names"}: cached per encoder."""
    path = root / f"features-{encoder}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return {k: data[k] for k in data.files}
    from PIL import Image

    from embeddings.ml.transforms import batch_tensors

    body = json.loads((root / "dataset_ood.json").read_text())
    names = [img["filename"] for img in body["images"]]
    texts = [img["sentences"][0]["raw"] for img in body["images"]]
    pooled, logits = [], []
    for start in range(0, len(names), 32):
        imgs = [Image.open(root / "images" / n).convert("RGB") for n in names[start:start + 32]]
        out = image_enc.encode(batch_tensors(imgs), fields=("pooled", "logits"))
        pooled.append(out["pooled"].numpy())
        logits.append(out["logits"].numpy())
    result = {"pooled": np.concatenate(pooled), "logits": np.concatenate(logits),
              "text": text_enc.encode(texts).numpy(), "names": np.array(names)}
    np.savez(path, **result)
    return result


def ood_data(ood: dict[str, np.ndarray]) -> EmbeddingData:
    n = len(ood["pooled"])
    return EmbeddingData(torch.from_numpy(ood["pooled"]).float()[:, None], torch.from_numpy(ood["text"]).float(),
                         torch.arange(n))


def encoders():
    from embeddings.ml.image_encoder import ImageEncoder
    from embeddings.ml.text_encoder import TextEncoder

    return ImageEncoder(), TextEncoder()


def class_vecs_cached(text_enc, root: Path) -> np.ndarray:
    path = root / "class_vectors.npy"
    if path.is_file():
        return np.load(path)
    vecs = class_vectors(load_class_names(), lambda t: text_enc.encode(t).numpy())
    np.save(path, vecs)
    return vecs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "flickr8k")
    p.add_argument("--ood", type=Path, default=REPO / "var" / "ood")
    p.add_argument("--variant", default="prior")
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--no-defaults", action="store_true", help="start from the product's embedding defaults")
    p.add_argument("--baselines", action="store_true")
    p.add_argument("--shipped", type=Path, default=REPO / "var" / "models" / "embedding-flickr8k-previous",
                   help="the joint embedding shipped before issue 20 (models/embedding-flickr8k at commit "
                        "c780974: git show c780974:models/embedding-flickr8k/<file> > DIR/<file>)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--encoder", choices=["lite0", "lite2", "lite0+lite2"], default="lite0",
                   help="image features: Lite2 / the concatenation need bench/lite2_conse.py --train first")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json-out", type=Path, default=REPO / "var" / "bench" / "prior_results.jsonl")
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(args.threads)
    image_enc, text_enc = encoders()
    fc = image_enc.backbone._fc
    fc_w, fc_b = fc.weight.detach().clone(), fc.bias.detach().clone()
    cvecs = torch.from_numpy(class_vecs_cached(text_enc, args.ood))
    ood = load_ood(args.ood, "lite0", image_enc, text_enc)
    tr = load_split(args.cache, "train").data
    dev = load_split(args.cache, "dev").data
    if args.encoder != "lite0":
        tr, dev, ood, fc_w, fc_b = swap_encoder(args.encoder, tr, dev, ood, fc_w, fc_b)
        args.sets = [f"model.image_dim={tr.image_feats.shape[-1]}"] + args.sets
    sets = {"flickr8k_dev": {"images": dev.num_images, "captions": int(dev.text_feats.shape[0])},
            "ood_dev": {"images": len(ood["pooled"]), "captions": len(ood["text"])}}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict) -> None:
        row["sets"] = sets
        print(json.dumps(row), flush=True)
        with open(args.json_out, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    if args.baselines:
        run_baselines(tr, dev, ood, cvecs, fc_w, fc_b, emit, args.shipped)
        return
    config = TrainConfig.default("embedding")
    config = apply_overrides(config, ([] if args.no_defaults else PRIOR_DEFAULTS) + args.sets)
    make = lambda cfg: PriorEmbedding(cfg, class_vecs=cvecs, fc_weight=fc_w, fc_bias=fc_b)  # noqa: E731
    task = EmbeddingTask(config.model, config.task, batch_size=config.loop.batch_size, train=tr, dev=dev,
                         seed=config.loop.seed, make_model=make if config.model.family == "prior" else None,
                         extra_dev={"ood": ood_data(ood)})
    start = time.perf_counter()

    def on_event(name: str, payload: dict) -> None:
        if name == "epoch":
            d = payload["dev"]
            print(f"epoch {payload['epoch']}: dev t2i {d['t2i_r1']:.1f} i2t {d['i2t_r1']:.1f} | ood t2i "
                  f"{d['ood_t2i_r1']:.1f} r10 {d['ood_t2i_r10']:.1f} | train {payload['train']}",
                  file=sys.stderr, flush=True)

    result = train(config.loop, task, device="cpu", on_event=on_event)
    wall = time.perf_counter() - start
    model = task.model.eval()
    flick = split_metrics(model, dev)
    oodm = split_metrics(model, ood_data(ood))
    emit({"variant": args.variant, "encoder": args.encoder, "sets_overrides": args.sets,
          "best_epoch": result.best_epoch,
          "epochs": result.epochs, "wall_s": round(wall, 1), "flickr8k_dev": flick, "ood_dev": oodm})
    if args.out:
        from embeddings.ml.checkpoint import checkpoint_to_dict, save_checkpoint

        tensors, cfg = checkpoint_to_dict(model, config.model)
        save_checkpoint(args.out, tensors=tensors, config=cfg, meta={"kind": "embedding", "variant": args.variant})


def swap_encoder(name: str, tr: EmbeddingData, dev: EmbeddingData, ood: dict, fc_w, fc_b):
    """Lite2 or Lite0+Lite2 features (var/cache/lite2-*.npz) and their classifier.

    The concatenation's classifier averages the two models' logits: [W0 W2] / 2, (b0 + b2) / 2,
    still linear in the (2560-d) features, so ConSE stays inside the model."""
    from embeddings.ml.image_encoder import LITE2, ImageEncoder

    cache = REPO / "var" / "cache"
    l2 = {s: np.load(cache / f"lite2-{s}.npz") for s in ("train", "dev", "ood")}
    fc2 = ImageEncoder(model_name=LITE2).backbone._fc
    w2, b2 = fc2.weight.detach().clone(), fc2.bias.detach().clone()

    def feats(old: torch.Tensor, new: np.ndarray) -> torch.Tensor:
        new_t = torch.from_numpy(new).to(old.dtype)[:, None]  # (N, 1, 1280)
        return new_t if name == "lite2" else torch.cat([old[:, :1], new_t], dim=-1)  # (N, 1, 2560)

    tr = EmbeddingData(feats(tr.image_feats, l2["train"]["pooled"]), tr.text_feats, tr.text_image)
    dev = EmbeddingData(feats(dev.image_feats, l2["dev"]["pooled"]), dev.text_feats, dev.text_image)
    pooled = l2["ood"]["pooled"] if name == "lite2" else np.hstack([ood["pooled"], l2["ood"]["pooled"]])
    ood = {**ood, "pooled": pooled.astype(np.float32)}
    if name == "lite2":
        return tr, dev, ood, w2, b2
    return tr, dev, ood, torch.cat([fc_w, w2], dim=1) / 2, (fc_b + b2) / 2


def run_baselines(tr, dev, ood, cvecs, fc_w, fc_b, emit, shipped_dir: Path) -> None:
    """ConSE v0, the shipped joint embedding, and their query-time fusion (w chosen on Flickr8k dev)."""
    from embeddings.ml.embedder import JointEmbedder

    cv = cvecs.numpy()

    def conse(feats: np.ndarray) -> np.ndarray:
        logits = feats @ fc_w.numpy().T + fc_b.numpy()
        return conse_image_vectors(logits, cv)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    dev_pooled = dev.image_feats[:, 0].float().numpy()
    dev_txt = unit(dev.text_feats.float().numpy())
    ood_txt = unit(ood["text"])
    owner_dev, owner_ood = dev.text_image.numpy(), np.arange(len(ood["text"]))
    c_dev, c_ood = conse(dev_pooled), conse(ood["pooled"])
    emit({"variant": "conse_v0", "flickr8k_dev": retrieval_metrics(c_dev, dev_txt, owner_dev),
          "ood_dev": retrieval_metrics(c_ood, ood_txt, owner_ood)})
    shipped = JointEmbedder.from_checkpoint(shipped_dir, lambda t: None)
    with torch.no_grad():
        enc_i = lambda x: shipped.model.encode_image(torch.from_numpy(np.asarray(x, np.float32))).numpy()  # noqa: E731
        enc_t = lambda x: shipped.model.encode_text(torch.from_numpy(np.asarray(x, np.float32))).numpy()  # noqa: E731
        j_dev_i, j_dev_t, j_ood_i, j_ood_t = enc_i(dev_pooled), enc_t(dev_txt), enc_i(ood["pooled"]), enc_t(ood_txt)
    emit({"variant": "shipped_joint", "flickr8k_dev": retrieval_metrics(j_dev_i, j_dev_t, owner_dev),
          "ood_dev": retrieval_metrics(j_ood_i, j_ood_t, owner_ood)})
    # Fusion: score = (1 - w) joint + w conse == inner product of the scaled concatenations.
    best = None
    for w in np.linspace(0.0, 1.0, 21):
        fi = np.hstack([np.sqrt(1 - w) * j_dev_i, np.sqrt(w) * c_dev])
        ft = np.hstack([np.sqrt(1 - w) * j_dev_t, np.sqrt(w) * dev_txt])
        m = retrieval_metrics(fi, ft, owner_dev)
        if best is None or m["rsum"] > best[1]["rsum"]:
            best = (w, m)
    w = best[0]
    fi = np.hstack([np.sqrt(1 - w) * j_ood_i, np.sqrt(w) * c_ood])
    ft = np.hstack([np.sqrt(1 - w) * j_ood_t, np.sqrt(w) * ood_txt])
    emit({"variant": f"fusion_shipped+conse_w{w:.2f}", "flickr8k_dev": best[1],
          "ood_dev": retrieval_metrics(fi, ft, owner_ood)})


if __name__ == "__main__":
    main()
