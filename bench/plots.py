"""PNG plots for docs/benchmarks.md from measured results (run by `make bench` via run_all.py).

- docs/img/embedding_training.png: training loss and dev R@1 per epoch of the shipped
  embedding's `manage.py train` run (bench/results/embedding_history.json, copied from its
  TrainingRun.history);
- docs/img/latency_vs_n.png: single-query search latency (one core) against the number of
  vectors, per index, from bench/index_bench.py's raw results (bench/results/index_raw.json);
- docs/img/index_recall_qps.png is written by bench/index_report.py.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HISTORY = ROOT / "bench" / "results" / "embedding_history.json"
TRAINING_PNG = ROOT / "docs" / "img" / "embedding_training.png"
INDEX_RAW = ROOT / "bench" / "results" / "index_raw.json"
LATENCY_PNG = ROOT / "docs" / "img" / "latency_vs_n.png"
LABELS = {"faiss_flat": "exact (faiss Flat)", "ours": "ours (default: IVF-PQ fast-scan + exact re-rank)",
          "ours_hnsw": "ours (HNSW, recall@10 >= 0.95)",
          "hnswlib": "hnswlib (same recall)", "ours_ivfpq_sq8": "ours (IVF-PQ + SQ8 refine)",
          "ours_ivfpq": "ours (IVF-PQ, 100 B/vector; low recall)"}


def training_curves() -> Path | None:
    if not HISTORY.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(HISTORY.read_text())["history"]
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train"]["contrastive_loss"] for h in history], marker="o")
    ax1.set(title="training loss (InfoNCE)", xlabel="epoch", ylabel="loss")
    for key, label in (("t2i_r1", "text->image R@1"), ("i2t_r1", "image->text R@1")):
        ax2.plot(epochs, [h["dev"][key] for h in history], marker="o", label=label)
    ax2.set(title="Flickr8k dev recall@1 (%)", xlabel="epoch", ylabel="%")
    ax2.legend()
    fig.suptitle("embedding-flickr8k: manage.py train on Flickr8k train, 2-core CPU")
    fig.tight_layout()
    TRAINING_PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(TRAINING_PNG, dpi=100)
    plt.close(fig)
    return TRAINING_PNG


def latency_vs_n() -> Path | None:
    if not INDEX_RAW.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(json.loads(INDEX_RAW.read_text()), key=lambda r: r["n"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in LABELS.items():
        points = [(r["n"], 1000.0 / r[key]["qps_single_1core"]) for r in runs
                  if r.get(key) and r[key].get("qps_single_1core")]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="vectors (d = 512)", ylabel="ms per query (1 core)",
           title="Index search latency vs N (bench/index_bench.py)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    LATENCY_PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(LATENCY_PNG, dpi=100)
    plt.close(fig)
    return LATENCY_PNG


def main() -> None:
    for path in (training_curves(), latency_vs_n()):
        if path:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
