"""Issue 20 diagnostics: ConSE variants (prompts x k x T) on Flickr8k dev and the OOD dev set.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/ood_zero_shot_sweep.py (after bench/prior_flickr8k.py cached
the OOD features). Figures quoted in docs/benchmarks.md, "Open-vocabulary embedding (issue 20)".
"""

import sys
import numpy as np
import torch
import os

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, ".")
torch.set_num_threads(1)
# imported after HF_HUB_OFFLINE and the thread count are set
from embeddings.ml.conse import class_vectors, conse_image_vectors, load_class_names  # noqa: E402
from embeddings.ml.text_encoder import TextEncoder  # noqa: E402
from embeddings.ml.image_encoder import ImageEncoder  # noqa: E402
from bench.cached_features import load_split  # noqa: E402
from training.ml.retrieval_metrics import retrieval_metrics  # noqa: E402

te = TextEncoder()
ie = ImageEncoder()
fc = ie.backbone._fc
W, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
ood = np.load("var/ood/features-lite0.npz")
dev = load_split("var/cache/flickr8k", "dev").data
dl = dev.image_feats[:, 0].float().numpy() @ W.T + b
ol = ood["logits"]
dt = dev.text_feats.float().numpy()
dt /= np.linalg.norm(dt, axis=1, keepdims=True)
ot = ood["text"]
names = load_class_names()


def enc(t):
    return te.encode(t).numpy()


P = {"bare": ("{}",), "photo": ("a photo of a {}.",), "ens3": ("{}", "a photo of a {}.", "a picture of a {}.")}
for pn, pr in P.items():
    cv = class_vectors(names, enc, pr)
    for k in (1, 5, 10, 20):
        for T in (1.0, 2.0, 4.0):
            a = retrieval_metrics(conse_image_vectors(dl, cv, k=k, temperature=T), dt, dev.text_image.numpy())
            o = retrieval_metrics(conse_image_vectors(ol, cv, k=k, temperature=T), ot, np.arange(len(ot)))
            print(
                pn,
                k,
                T,
                f"f8k t2i {a['t2i_r1']:.1f} i2t {a['i2t_r1']:.1f} rsum {a['rsum']:.0f} | "
                f"ood t2i {o['t2i_r1']:.1f} r10 {o['t2i_r10']:.1f} rsum {o['rsum']:.0f}",
                flush=True,
            )
