"""Validated training configurations: defaults per kind, overrides from a dict or key=value list."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import training.ml.caption_task  # noqa: F401  (registers the "captioner" kind with TrainConfig)
import training.ml.paragraph_task  # noqa: F401  (registers the "paragraph" kind)
from project.exceptions import ApplicationError
from training.ml.config import TrainConfig, overrides_as_dict

KINDS = ("embedding", "captioner", "paragraph")

# Loop defaults that differ per kind (the generic LoopConfig defaults suit the embedding heads;
# the captioner early-stops on CIDEr-D and learns with smaller batches, as in bench/).
KIND_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # The recipe of the shipped embedding (models/MODEL_CARD.md; issue 20, chosen on Flickr8k dev
    # AND the out-of-domain dev set with bench/prior_flickr8k.py): the "prior" family, ConSE v0
    # inside the model plus a gated residual and a gated joint space fused with it, early
    # stopping on both sets (both_rsum), so the admin's Retrain button trains what ships.
    "embedding": {"loop": {"epochs": 15, "weight_decay": 0.2, "patience": 5, "early_stop_metric": "both_rsum"},
                  "model": {"family": "prior", "dim": 896, "joint_dim": 512, "prior_weight": 0.2, "gate": "image",
                            "text_residual": False, "hidden": 1024, "dropout": 0.4, "init_temperature": 0.03},
                  "task": {"positives": "log_sum", "ood_collection": "ood-dev"}},
    # The shipped captioner's recipe too (models/MODEL_CARD.md: 10 epochs; the model sizes are
    # CaptionerConfig's defaults), so a Retrain of the captioner reproduces what ships.
    "captioner": {"loop": {"early_stop_metric": "cider_d", "epochs": 10, "batch_size": 64, "lr": 2e-3,
                           "patience": 3}},
    # Paragraph vectors (gensim Doc2Vec): loop.lr is Doc2Vec's starting alpha, falling linearly to
    # lr * min_lr_ratio (gensim's 0.025 -> 0.0001); epochs are passes per model; the other loop
    # settings (batch size, weight decay, warm-up, early stopping) do not apply to this kind.
    # PV-DBOW alone by default (bench/results/paragraph.md): on Flickr8k dev it is far ahead of PV-DM and
    # level with the PV-DM+DBOW concatenation on the promotion score (mean p2i/p2d R@1: the concatenation
    # leads on paragraph -> image, PV-DBOW on descriptions) at half the cost; 40 epochs beat gensim's 20
    # (--sweep). model.mode=dm|both trains the others.
    "paragraph": {"loop": {"epochs": 40, "lr": 0.025, "min_lr_ratio": 0.004, "early_stop_metric": None,
                           "patience": 0},
                  "model": {"mode": "dbow"}},
}

# The hyper-parameters offered by the admin's Retrain form: (section, name, label).
MAIN_FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "embedding": [("loop", "epochs", "Epochs (upper bound)"), ("loop", "batch_size", "Batch size"),
                  ("loop", "lr", "Peak learning rate"), ("loop", "weight_decay", "Weight decay"),
                  ("loop", "warmup_steps", "Warm-up steps"), ("loop", "patience", "Early-stop patience"),
                  ("loop", "seed", "Seed"), ("model", "dim", "Embedding width"), ("model", "head", "Head"),
                  ("model", "dropout", "Dropout"), ("model", "image_input", "Image input"),
                  ("task", "loss", "Loss"), ("loop", "optimizer", "Optimiser (AdamW, or Adagrad as in Downpour)"),
                  ("loop", "parallel", "Parallelism (sync, or lock-free Hogwild CPU processes)"),
                  ("loop", "workers", "Hogwild processes"),
                  ("task", "image_encoder", "Image encoder (Lite0 224 px, or Lite2 260 px)")],
    "captioner": [("loop", "epochs", "Epochs (upper bound)"), ("loop", "batch_size", "Batch size (captions)"),
                  ("loop", "lr", "Peak learning rate"), ("loop", "weight_decay", "Weight decay"),
                  ("loop", "patience", "Early-stop patience"), ("loop", "seed", "Seed"),
                  ("model", "decoder", "Decoder"), ("model", "hidden_dim", "LSTM width"),
                  ("model", "dropout", "Dropout"), ("task", "vocab_min_count", "Min word count"),
                  ("task", "label_smoothing", "Label smoothing"),
                  ("task", "image_encoder", "Image encoder (Lite0 224 px, or Lite2 260 px)"),
                  ("task", "scst_epochs", "Self-critical epochs after cross-entropy (0 = none)"),
                  ("task", "scst_lr", "Self-critical learning rate"),
                  ("task", "scst_samples", "Self-critical samples per image"),
                  ("task", "scst_baseline", "Self-critical baseline (greedy decode, or mean of the other samples)"),
                  ("task", "init_version", "Start from captioner version (id; 0 = from scratch)")],
    "paragraph": [("loop", "epochs", "Epochs (passes per model)"), ("loop", "lr", "Start learning rate (alpha)"),
                  ("loop", "seed", "Seed"), ("model", "mode", "Models (PV-DM, PV-DBOW, both)"),
                  ("model", "vector_size", "Vector size (per model)"), ("model", "window", "Window"),
                  ("model", "min_count", "Min word count"), ("model", "negative", "Negative samples"),
                  ("model", "map_ridge", "Image map ridge penalty"), ("task", "held_out", "Dev held-out captions")],
}


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def default_config(kind: str) -> TrainConfig:
    if kind not in KINDS:
        raise ApplicationError(f"Unknown kind {kind!r}; choose one of {', '.join(KINDS)}.",
                               fields={"kind": ["Unknown kind."]})
    return TrainConfig.from_dict(_merge(TrainConfig.default(kind).to_dict(), KIND_DEFAULTS[kind]))


def train_config_build(*, kind: str, overrides: Mapping[str, Any] | Sequence[str] | None = None,
                       sets: Sequence[str] = ()) -> TrainConfig:
    """The kind's defaults with `overrides` applied: a nested dict ({"loop": {"lr": 3e-4}}) or
    ["loop.lr=3e-4", "epochs=5"], then the `sets` strings. Unknown keys or bad values raise
    ApplicationError (400)."""
    config = default_config(kind)
    try:
        sets = [s for s in sets if s.strip()]
        if isinstance(overrides, Mapping):
            if overrides.get("kind", kind) != kind:
                raise ValueError(f"config kind {overrides.get('kind')!r} does not match {kind!r}")
            # One validation of everything together: the form's main fields and its extra lines
            # may only be valid jointly (the prior family's dim follows its joint_dim).
            merged = _merge(_merge(config.to_dict(), overrides), overrides_as_dict(config, sets))
            return TrainConfig.from_dict(merged)
        if overrides:
            if isinstance(overrides, str):
                raise ValueError("overrides must be a mapping or a list of key=value strings")
            sets = list(overrides) + sets
        if sets:
            config = TrainConfig.from_dict(_merge(config.to_dict(), overrides_as_dict(config, sets)))
    except (ValueError, TypeError) as exc:
        raise ApplicationError(f"Invalid training configuration: {exc}", fields={"config": [str(exc)]}) from exc
    return config


def field_spec(kind: str, section: str, name: str) -> tuple[Any, Any]:
    """(type annotation, default value) of one config field of `kind`'s default config."""
    import typing

    part = getattr(default_config(kind), section)
    return typing.get_type_hints(type(part))[name], getattr(part, name)
