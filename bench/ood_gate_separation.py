"""Issue 20 diagnostics: how far each set lies from the training data (cosine to the nearest k-means centroid).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/ood_gate_separation.py. The separation the gated residual uses.
"""

import sys
import numpy as np
import torch  # noqa: F401  (loaded before faiss, as this script always did)
import faiss

sys.path.insert(0, ".")
from bench.cached_features import load_split

ood = np.load("var/ood/features-lite0.npz")
tr = load_split("var/cache/flickr8k", "train").data
dev = load_split("var/cache/flickr8k", "dev").data


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


ti = unit(tr.image_feats[:, 0].float().numpy())
di = unit(dev.image_feats[:, 0].float().numpy())
oi = unit(ood["pooled"])
tt = unit(tr.text_feats.float().numpy())
dt = unit(dev.text_feats.float().numpy())
ot = unit(ood["text"])
for name, (t, d, o) in {"image": (ti, di, oi), "text": (tt, dt, ot)}.items():
    for K in (64, 256):
        km = faiss.Kmeans(t.shape[1], K, niter=20, seed=0, spherical=True)
        km.train(t)
        C = unit(km.centroids)

        def s(x, C=C):
            return (x @ C.T).max(1)

        def q(x):
            return np.percentile(x, [1, 5, 10, 50]).round(3)

        st, sd, so = s(t), s(d), s(o)
        print(
            name,
            K,
            "train",
            q(st),
            "dev",
            q(sd),
            "ood",
            q(so),
            f"ood>dev1%: {(so > np.percentile(sd, 1)).mean():.2f}",
            f"ood>dev5%: {(so > np.percentile(sd, 5)).mean():.2f}",
        )
