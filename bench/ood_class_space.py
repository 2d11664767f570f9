"""Issue 20 diagnostics: matching in class space (text -> class distribution vs image class distribution).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/ood_class_space.py. Quoted in docs/benchmarks.md (issue 20).
"""

import sys
import numpy as np
import torch
import os

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, ".")
torch.set_num_threads(1)
# imported after HF_HUB_OFFLINE and the thread count are set
from bench.cached_features import load_split  # noqa: E402
from training.ml.retrieval_metrics import retrieval_metrics  # noqa: E402
from embeddings.ml.image_encoder import ImageEncoder  # noqa: E402

ie = ImageEncoder()
fc = ie.backbone._fc
W, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
ood = np.load("var/ood/features-lite0.npz")
cv = np.load("var/ood/class_vectors.npy")
dev = load_split("var/cache/flickr8k", "dev").data
dl = dev.image_feats[:, 0].float().numpy() @ W.T + b
ol = ood["logits"]
dt = dev.text_feats.float().numpy()
dt /= np.linalg.norm(dt, axis=1, keepdims=True)
ot = ood["text"]


def sm(x, t):
    z = x / t
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


for T in (1.0, 2.0):
    for tau in (0.02, 0.05, 0.1):
        for mode in ("p", "sqrt"):
            f = (lambda p: p) if mode == "p" else np.sqrt
            a = retrieval_metrics(unit(f(sm(dl, T))), unit(f(sm(dt @ cv.T, tau))), dev.text_image.numpy())
            o = retrieval_metrics(unit(f(sm(ol, T))), unit(f(sm(ot @ cv.T, tau))), np.arange(len(ot)))
            print(
                T,
                tau,
                mode,
                f"f8k t2i {a['t2i_r1']:.1f} i2t {a['i2t_r1']:.1f} rsum {a['rsum']:.0f} | "
                f"ood t2i {o['t2i_r1']:.1f} r10 {o['t2i_r10']:.1f} rsum {o['rsum']:.0f}",
                flush=True,
            )
# top-1 accuracy proxy: does the OOD image's top class name match its sentence's nearest class?
tc = ol.argmax(1)
sc = (ot @ cv.T).argmax(1)
print("ood top1 agreement", (tc == sc).mean())
