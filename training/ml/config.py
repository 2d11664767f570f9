"""Training configuration: frozen dataclasses, strict dicts, command-line overrides.

``TrainConfig`` = ``kind`` + ``loop`` (the generic ``LoopConfig`` the trainer reads) +
``model`` (the model family's config, saved in its checkpoint) + ``task`` (data sampling,
augmentation, loss mix). The ``model``/``task`` classes depend on ``kind``; kinds register
their pair with ``register_kind`` ("embedding" is built in), so this module does not need to
know the caption generator.

``TrainConfig.from_dict`` rejects unknown keys at every level; ``apply_overrides`` applies
``--set key=value`` strings (``loop.lr=3e-4``, or ``lr=3e-4`` when the name is unique
across sections) and re-validates.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal
from collections.abc import Mapping, Sequence

from embeddings.ml.config_dict import dataclass_from_dict, dataclass_to_dict, parse_field_value
from embeddings.ml.heads import EmbeddingConfig
from embeddings.ml.image_encoder import ENCODERS, ImageEncoderName
from embeddings.ml.image_encoder import MODEL_NAME as LITE0


@dataclass(frozen=True)
class LoopConfig:
    """What the generic loop needs; nothing here knows the model family."""

    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # samples per step (the task builds batches of this size)
    lr: float = 1e-3  # peak AdamW learning rate, reached after warmup
    weight_decay: float = 0.05  # AdamW decay on matrices only (not biases, norms, scales)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 100  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0  # seeds model init, sampling and dropout
    early_stop_metric: str | None = "rsum"  # dev metric from task.evaluate; None disables
    early_stop_mode: Literal["max", "min"] = "max"
    patience: int = 5  # evaluations without improvement before stopping; 0 = never stop early
    min_delta: float = 0.0  # improvement smaller than this does not count
    restore_best: bool = True  # end with the best dev weights, not the last
    eval_every_epochs: int = 1
    checkpoint_every_epochs: int = 1  # resume state cadence (needs a checkpoint_dir)
    log_every_steps: int = 10  # "step" event cadence
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    # "adamw": decoupled weight decay on matrices; "adagrad": per-coordinate steps lr / sqrt(sum
    # of squared gradients), the optimiser Downpour SGD paired with asynchronous updates (Dean
    # et al. 2012); weight_decay is then an L2 term on the same matrices. Adagrad wants a larger
    # lr than AdamW (~1e-2 against 1e-3).
    optimizer: Literal["adamw", "adagrad"] = "adamw"
    # "sync": one process (or DDP ranks, training.ml.distributed); "hogwild": `workers` CPU
    # processes step the same shared-memory parameters and optimiser state without locks
    # (Recht et al. 2011; training.ml.hogwild). Hogwild runs are not bit-for-bit reproducible.
    parallel: Literal["sync", "hogwild"] = "sync"
    workers: int = 2  # Hogwild processes (ignored when parallel == "sync")

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "eval_every_epochs", "checkpoint_every_epochs", "log_every_steps",
                    "workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0; weight_decay, grad_clip, warmup_steps >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0 or self.patience < 0:
            raise ValueError("min_lr_ratio must be in [0, 1] and patience >= 0")
        if self.early_stop_mode not in ("max", "min"):
            raise ValueError("early_stop_mode must be 'max' or 'min'")
        if self.optimizer not in ("adamw", "adagrad") or self.parallel not in ("sync", "hogwild"):
            raise ValueError("optimizer must be 'adamw' or 'adagrad'; parallel 'sync' or 'hogwild'")


@dataclass(frozen=True)
class EmbeddingTaskConfig:
    """How the joint-embedding task samples, augments and scores batches."""

    captions_per_image: int = 2  # captions of one image grouped together in a batch (1-5)
    augment_views: bool = True  # sample one cached augmented view per image per epoch
    caption_dropout: float = 0.1  # fraction of captions left out of each epoch (resampled)
    text_noise: float = 0.0  # std of Gaussian noise added to cached text vectors (training only)
    loss: Literal["info_nce", "hinge", "both"] = "info_nce"
    positives: Literal["mean_log", "log_sum"] = "mean_log"  # multi-positive InfoNCE variant
    label_smoothing: float = 0.0
    hinge_margin: float = 0.2
    hinge_hardest: bool = True  # VSE++ hardest negative vs VSE0 sum
    hinge_weight: float = 1.0  # weight of the hinge part when loss == "both"
    eval_batch_size: int = 1024
    # "prior" family (issue 20): ImageNet class names as weak extra captions of every training
    # image, weighted by the classifier's own top-k probabilities, keep the 1,000 concepts
    # aligned; an L2 penalty on the image residual keeps the model near its ConSE start.
    class_caption_weight: float = 0.0  # weight of that soft cross-entropy (0 = off)
    residual_l2: float = 0.0  # weight of mean |R_i(x)|^2 (the prior is a unit vector)
    # Name of an out-of-domain dev collection scored every epoch beside dev ("ood_*" metrics
    # and "both_rsum" = rsum + ood_rsum, an early-stop metric over both sets); "" = none.
    ood_collection: str = ""
    # The image encoder whose cached features the run trains on (embeddings.ml.image_encoder:
    # "efficientnet-lite0", 224 px, or "efficientnet-lite2", 260 px); the version records its
    # identity, and serving feeds it features of the same encoder.
    image_encoder: ImageEncoderName = "efficientnet-lite0"

    def __post_init__(self) -> None:
        check_image_encoder(self.image_encoder)
        if self.class_caption_weight < 0 or self.residual_l2 < 0:
            raise ValueError("class_caption_weight and residual_l2 must be >= 0")
        if not 1 <= self.captions_per_image <= 5:
            raise ValueError("captions_per_image must be in 1..5")
        if not 0.0 <= self.caption_dropout < 1.0 or self.text_noise < 0:
            raise ValueError("caption_dropout must be in [0, 1), text_noise >= 0")


def check_image_encoder(name: str) -> None:
    if name not in ENCODERS:
        raise ValueError(f"image_encoder must be one of {list(ENCODERS)}, got {name!r}")


def image_encoder_of(config: TrainConfig) -> str:
    """The image encoder a run trains on (kinds without the option use Lite0)."""
    return str(getattr(config.task, "image_encoder", LITE0))


# kind -> (model config class, task config class)
_KINDS: dict[str, tuple[type, type]] = {"embedding": (EmbeddingConfig, EmbeddingTaskConfig)}


def register_kind(kind: str, model_cls: type, task_cls: type) -> None:
    """Make ``kind`` known to TrainConfig (the caption generator registers itself)."""
    if not (dataclasses.is_dataclass(model_cls) and dataclasses.is_dataclass(task_cls)):
        raise TypeError("model and task configs must be dataclasses")
    _KINDS[kind] = (model_cls, task_cls)


def known_kinds() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the loop, the model and the task, for one model kind."""

    kind: str = "embedding"
    loop: LoopConfig = field(default_factory=LoopConfig)
    model: Any = field(default_factory=EmbeddingConfig)
    task: Any = field(default_factory=EmbeddingTaskConfig)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; known: {known_kinds()}")
        model_cls, task_cls = _KINDS[self.kind]
        if not isinstance(self.model, model_cls) or not isinstance(self.task, task_cls):
            raise ValueError(f"kind {self.kind!r} needs model {model_cls.__name__} and task {task_cls.__name__}")

    @classmethod
    def default(cls, kind: str = "embedding") -> TrainConfig:
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {known_kinds()}")
        model_cls, task_cls = _KINDS[kind]
        return cls(kind=kind, loop=LoopConfig(), model=model_cls(), task=task_cls())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(data, Mapping):
            raise ValueError("TrainConfig: expected a mapping")
        unknown = sorted(set(data) - {"kind", "loop", "model", "task"})
        if unknown:
            raise ValueError(f"TrainConfig: unknown key(s) {unknown}")
        kind = data.get("kind", "embedding")
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {known_kinds()}")
        model_cls, task_cls = _KINDS[kind]
        return cls(
            kind=kind,
            loop=dataclass_from_dict(LoopConfig, data.get("loop", {})),
            model=dataclass_from_dict(model_cls, data.get("model", {})),
            task=dataclass_from_dict(task_cls, data.get("task", {})),
        )

    def to_dict(self) -> dict:
        return {"kind": self.kind, "loop": dataclass_to_dict(self.loop),
                "model": dataclass_to_dict(self.model), "task": dataclass_to_dict(self.task)}


_SECTIONS = ("loop", "model", "task")


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Return ``config`` with ``["section.key=value", "key=value", ...]`` applied.

    A bare ``key`` must name a field of exactly one section. Values are parsed by the
    field's type ("true"/"false", numbers, "none", JSON lists for tuples). Unknown keys,
    ambiguous keys and bad values raise ValueError; ``kind`` cannot be overridden.
    """
    changes = overrides_as_dict(config, overrides)
    try:
        return dataclasses.replace(
            config, **{s: dataclasses.replace(getattr(config, s), **c) for s, c in changes.items() if c}
        )
    except TypeError as exc:  # dataclasses.replace on a bad field name
        raise ValueError(str(exc)) from exc


def overrides_as_dict(config: TrainConfig, overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["section.key=value", ...]`` parsed against ``config``'s field types, as a nested dict
    (not validated yet: merge it with other changes, then ``TrainConfig.from_dict`` once, so
    fields that must change together, e.g. model.family and model.dim, can)."""
    changes: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        section, name = _resolve(config, key)
        hints = typing.get_type_hints(type(getattr(config, section)))
        changes.setdefault(section, {})[name] = parse_field_value(text.strip(), hints[name], f"{section}.{name}")
    return changes


def _resolve(config: TrainConfig, key: str) -> tuple[str, str]:
    if key == "kind":
        raise ValueError("kind cannot be overridden; start from that kind's default config")
    if "." in key:
        section, _, name = key.partition(".")
        if section not in _SECTIONS:
            raise ValueError(f"unknown section {section!r} in {key!r}; sections: {_SECTIONS}")
        if name not in {f.name for f in dataclasses.fields(getattr(config, section))}:
            raise ValueError(f"unknown key {key!r}")
        return section, name
    owners = [s for s in _SECTIONS if key in {f.name for f in dataclasses.fields(getattr(config, s))}]
    if not owners:
        raise ValueError(f"unknown key {key!r}")
    if len(owners) > 1:
        raise ValueError(f"ambiguous key {key!r}: use one of {[f'{s}.{key}' for s in owners]}")
    return owners[0], key
