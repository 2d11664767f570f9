"""PNG plots for docs/benchmarks.md from measured results (run by `make bench` via run_all.py).

- docs/img/embedding_training.png: training loss and dev R@1 per epoch of the shipped
  embedding's `manage.py train` run (bench/results/embedding_history.json, copied from its
  TrainingRun.history);
- docs/img/index_recall_qps.png is written by bench/index_report.py.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HISTORY = ROOT / "bench" / "results" / "embedding_history.json"
TRAINING_PNG = ROOT / "docs" / "img" / "embedding_training.png"


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


def main() -> None:
    for path in (training_curves(),):
        if path:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
