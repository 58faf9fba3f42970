"""Training recipes (``configs/*.yaml``) as nested dataclasses.

A recipe is strict: an unknown key anywhere is an error naming the known ones, so a typo
cannot pass silently. ``TrainConfig.from_dict`` builds one from a YAML-loaded dict and
``to_dict`` gives it back (saved in every checkpoint's ``state.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mlx_caption.errors import UserError


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``key = "a.b"``, creating sections on the way (what
    ``train --set a.b=...`` and the demo's overrides do)."""
    node = tree
    *sections, last = key.split(".")
    for part in sections:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{key}: {part!r} is not a section")
    node[last] = value


def _section(cls, data: dict[str, Any] | None, where: str):
    """Build a nested section, refusing unknown keys: a typo in a recipe must not pass silently."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(
            f"unknown key(s) in training config section {where!r}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(names))})"
        )
    return cls(**data)


@dataclass
class TrainModelConfig:
    """What to train: the encoder source, how much of it trains, and the decoder size."""

    # "scratch" (random init from ``vision``), a zoo name, or a converted encoder folder.
    encoder: str = "scratch"
    vision: dict[str, Any] | None = None  # VisionConfig fields, used when encoder == "scratch"
    # Feed the encoder images of this side instead of its checkpoint's (e.g. 336 with a
    # 224-px checkpoint): the processor follows, position embeddings are resized. None: as is.
    image_size: int | None = None
    # Scratch encoders: "sincos" starts the position embedding as 2-D sine-cosine values
    # (neighbouring patches start out close; faster to learn where things are), or "random".
    position_init: str = "sincos"
    # "frozen": encoder fixed, features cached; "finetune": encoder blocks train too.
    encoder_mode: str = "frozen"
    finetune_last_n: int | None = None  # finetune: the last N blocks (None = whole encoder)
    grad_checkpoint: bool = False  # recompute encoder activations in the backward pass
    decoder: str | dict[str, Any] = "tiny"  # a zoo DECODER_PRESETS name or DecoderConfig fields
    decoder_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {dropout: 0.0}
    projector: str = "linear"
    # Start from a captioner (weights and tokenizer; its architecture wins over
    # encoder/vision/decoder above): a pretrained one (a zoo name such as blip-base, a
    # converted or Hugging Face folder, a hub id) to fine-tune, or one of ours, e.g. a frozen
    # run's best/ before fine-tuning the encoder.
    init_from: str | None = None


@dataclass
class TrainDataConfig:
    """Where the captions and images come from, and how captions become tokens."""

    format: str = "karpathy"  # a data/sources.py format, ignored when ``synthetic`` is set
    annotations: str | None = None
    images: str | None = None
    # Generate a synthetic set on the fly: {images: N, size: 64, seed: 0}.
    synthetic: dict[str, Any] | None = None
    tokenizer: str | None = None  # tokenizer.json path or hub id; None = train on train captions
    vocab_size: int = 8192  # when the tokenizer is trained here
    max_length: int = 32  # caption tokens per row (with <start>/<end>), fixed so nothing recompiles
    train_split: str = "train"
    val_split: str = "val"
    # Rows per image in one step: 1 = one random caption per image, 5 = all five (a batch of
    # 250 rows then holds 50 images).
    captions_per_image: int = 1
    # Frozen encoder: where encoder grids are cached (None: $MLX_CAPTION_CACHE/features or
    # ~/.cache/mlx_caption/features) and how they are stored ("float16" halves the size).
    feature_cache: str | None = None
    feature_dtype: str = "float32"


@dataclass
class TrainOptimConfig:
    """AdamW with linear warmup and cosine decay; a separate (lower) lr for encoder weights."""

    # "adamw", or "sgd" (with ``momentum``; weight decay as an L2 term): SGD's update is linear
    # in the gradient, which is what tests comparing two ways of computing one need.
    optimizer: str = "adamw"
    momentum: float = 0.0  # sgd only
    lr: float = 3e-4
    encoder_lr: float | None = None  # None = lr / 10
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # Adam's bias correction (standard AdamW); MLX's default is off, which makes the first
    # few hundred updates several times larger than ``lr``.
    bias_correction: bool = True
    warmup_steps: int = 500
    schedule: str = "cosine"  # "cosine" | "linear" | "constant" (after warmup)
    min_lr_ratio: float = 0.0  # lr at the end of decay, as a fraction of the peak
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    # False: biases, norms and position embeddings are not decayed (the usual practice);
    # True: plain AdamW decay on every parameter.
    decay_all: bool = False
    # Decay of an exponential moving average of the trainable weights (train/ema.py), e.g.
    # 0.99; validation and the checkpoints' model files use the average. None: no average.
    ema: float | None = None


@dataclass
class TrainEvalConfig:
    """Validation: teacher-forced loss plus greedy captions scored by caption metrics."""

    every_steps: int | None = None  # None = after each epoch
    val_images: int = 500  # fixed validation subset (first N images of the val split)
    batch_size: int = 50
    max_length: int | None = None  # generation length limit (None: the decoder's)
    metrics_tokenizer: str = "auto"  # metrics.score_captions tokenizer: auto | java | python
    # Caption metrics computed at each evaluation; add "METEOR" for it (starts a JVM).
    metrics: list[str] = field(default_factory=lambda: ["Bleu", "ROUGE_L", "CIDEr"])
    generate: bool = True  # False = validation loss only (fast)
    best_metric: str = "CIDEr"


@dataclass
class TrainCheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every_steps: int = 500
    keep_last: int = 3
    keep_best: bool = True


@dataclass
class TrainConfig:
    """A training recipe (``configs/*.yaml``): nested sections plus the loop's own settings."""

    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    checkpoint: TrainCheckpointConfig = field(default_factory=TrainCheckpointConfig)
    epochs: int = 20
    max_steps: int | None = None  # stop early after this many optimizer steps
    # Wall-clock limit of one run (one fit call), in minutes: past it the run saves a
    # checkpoint and ends (status "time_limit"); the lr schedule keeps its length, so a
    # resume continues it. For hard budgets; size the schedule with max_steps.
    max_minutes: float | None = None
    batch_size: int = 64  # caption rows per global step (all ranks together)
    label_smoothing: float = 0.1
    seed: int = 0
    compile: bool = True
    # Split each step's rows over this many CPU streams (ignored on a GPU): MLX runs each
    # element-wise op on one core, and a step has much element-wise work (loss over the
    # vocabulary, AdamW, backward passes); see train.step.TrainStep. "auto": one stream per
    # core, at most two (backend.default_parts), where that divides the images per process.
    cpu_streams: int | str = "auto"
    log_every: int = 10

    _SECTIONS = {
        "model": TrainModelConfig,
        "data": TrainDataConfig,
        "optim": TrainOptimConfig,
        "eval": TrainEvalConfig,
        "checkpoint": TrainCheckpointConfig,
    }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a (YAML-loaded) dict; unknown keys are errors, missing keys take defaults."""
        data = dict(data or {})
        kwargs = {
            name: _section(sec, data.pop(name, None), name) for name, sec in cls._SECTIONS.items()
        }
        top = {f.name for f in dataclasses.fields(cls)} - set(cls._SECTIONS)
        unknown = sorted(set(data) - top)
        if unknown:
            raise UserError(
                f"unknown top-level key(s) in training config: {', '.join(unknown)} "
                f"(sections: {', '.join(cls._SECTIONS)}; keys: {', '.join(sorted(top))})"
            )
        cfg = cls(**kwargs, **data)
        cfg.optim.betas = tuple(cfg.optim.betas)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(self.optim.betas)
        return d
