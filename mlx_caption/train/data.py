"""The trainer's view of the data: records, tokenizer, per-rank batches, validation subset.

Batches come from :func:`mlx_caption.data.pipeline.train_stream`, whose epoch plan depends on
``(seed, epoch)`` only, so batch ``b`` of epoch ``e`` is the same on every rank and after a
resume. A global batch of ``batch_size`` caption rows holds ``batch_size / k`` images
(``k = captions_per_image``); each rank trains on its contiguous slice of those images.

In ``frozen`` mode the stream runs without pixels (tokens and record indices only) and the
encoder's token grids come from the feature cache, computed once; in ``finetune`` mode it
decodes images with mlx-data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption.data.look import ImageLook, measure_look
from mlx_caption.data.preprocess import PreprocessConfig, load_image
from mlx_caption.data.sources import Record, load_records, validate_records
from mlx_caption.data.synthetic import OBJECT_DIAMETERS
from mlx_caption.errors import UserError
from mlx_caption.models.base import eval_mode
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.distributed import World, barrier, shard_rows

LOOK_SAMPLE = 64  # training images measured for the model's ImageLook


class TrainData:
    """Records and batches for one run; see the module docstring."""

    def __init__(
        self,
        cfg: TrainConfig,
        world: World,
        train: list[Record],
        val: list[Record],
        val_scenes: dict[str, Any] | None,
        cache_dir: Path,
        skipped: dict[str, int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.world = world
        self.train = train
        self.skipped = skipped or {"missing": 0, "corrupt": 0}  # training images left out
        self.val = val
        self.val_scenes = val_scenes
        self.cache_dir = cache_dir
        self.tokenizer = None
        self.preprocess: PreprocessConfig | None = None
        self.k = cfg.data.captions_per_image
        self.images_per_step = cfg.batch_size // self.k
        self._rows = shard_rows(self.images_per_step, world)
        self.features = None  # frozen: FeatureStore of the training images' grids
        self.val_features = None
        self._steps: int | None = None
        self._look: ImageLook | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, cfg: TrainConfig, out: Path, world: World) -> TrainData:
        """Load (or generate) the data set named by ``cfg.data`` and pick the splits."""
        d = cfg.data
        scenes = None
        if d.synthetic:
            path = _synthetic(d.synthetic, out / "data", world)
            records = load_records("karpathy", path, path.parent)
            from mlx_caption.data.synthetic import load_scenes

            scenes = {str(k): v for k, v in load_scenes(path, split=d.val_split).items()}
        else:
            if not d.annotations and d.format != "folder":
                raise UserError("data.annotations is not set (or use data.synthetic)")
            records = load_records(d.format, d.annotations, d.images)
        train = [r for r in records if r.split == d.train_split]
        val = [r for r in records if r.split == d.val_split]
        if not train:
            splits = sorted({r.split for r in records})
            raise UserError(f"no {d.train_split!r} records in the data (splits: {splits})")
        checked = validate_records(train)
        train = [train[i] for i in checked.ok]
        skipped = {"missing": len(checked.missing), "corrupt": len(checked.corrupt)}
        if not train:
            raise UserError(f"no usable {d.train_split!r} images: {skipped}")
        if val:
            report = validate_records(val)
            val = [val[i] for i in report.ok][: cfg.eval.val_images]
        if scenes is not None:
            scenes = {str(r.id): scenes[str(r.id)] for r in val if str(r.id) in scenes}
        cache = Path(d.feature_cache).expanduser() if d.feature_cache else default_feature_cache()
        return cls(cfg, world, train, val, scenes, cache, skipped)

    def make_tokenizer(self):
        """The recipe's tokenizer, or a BPE trained on the training captions."""
        from mlx_caption.tokenizer import CaptionTokenizer

        d = self.cfg.data
        if d.tokenizer:
            tok = CaptionTokenizer.from_pretrained(d.tokenizer)
        else:
            tok = CaptionTokenizer.train(
                (c for r in self.train for c in r.captions), vocab_size=d.vocab_size
            )
        self.tokenizer = tok
        return tok

    def set_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def set_preprocess(self, preprocess: PreprocessConfig) -> None:
        self.preprocess = preprocess

    # ------------------------------------------------------------------ sizes

    @property
    def num_train_images(self) -> int:
        """Usable training images (unreadable ones are in :attr:`skipped`)."""
        return len(self.train)

    def describe_train_images(self) -> str:
        """``"700 train images"``, with what was skipped and why when anything was."""
        text = f"{self.num_train_images} train images"
        reasons = [f"{n} {why}" for why, n in self.skipped.items() if n]
        if reasons:
            text += f" ({sum(self.skipped.values())} skipped: {', '.join(reasons)})"
        return text

    @property
    def num_val_images(self) -> int:
        return len(self.val)

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (images with unusable files are not counted)."""
        if self._steps is None:
            self._steps = self._stream(0, 0, pixels=False).batches_per_epoch
        return self._steps

    # ------------------------------------------------------------------ training batches

    def _stream(self, epoch: int, start: int, pixels: bool):
        from mlx_caption.data.pipeline import train_stream

        if self.tokenizer is None or self.preprocess is None:
            raise RuntimeError("set the tokenizer and preprocessing before streaming")
        return train_stream(
            self.train,
            self.tokenizer,
            self.preprocess,
            self.images_per_step,
            self.cfg.data.max_length,
            seed=self.cfg.seed,
            epoch=epoch,
            start_batch=start,
            captions_per_image=self.k,
            pixels=pixels,
        )

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[mx.array, mx.array]]:
        """This rank's ``(images, tokens)`` for batches ``start..`` of ``epoch``.

        ``images`` are pixels (finetune) or cached encoder grids (frozen); ``tokens`` are the
        ``k`` caption rows of each image, grouped by image.
        """
        frozen = self.features is not None
        rows = self._rows
        tok_rows = slice(rows.start * self.k, rows.stop * self.k)
        for batch in self._stream(epoch, start, pixels=not frozen):
            index = np.asarray(batch["index"])[rows]
            tokens = mx.array(np.asarray(batch["tokens"])[tok_rows])
            if frozen:
                images = mx.array(self.features.get(index))
            else:
                images = mx.array(np.asarray(batch["pixels"])[rows])
            yield images, tokens

    # ------------------------------------------------------------------ validation

    def val_batches(self) -> Iterator[dict[str, Any]]:
        """Validation subset in order: ``{"images", "ids", "references"}`` per batch."""
        bs = self.cfg.eval.batch_size
        if self.val_features is not None:
            for s in range(0, len(self.val), bs):
                part = self.val[s : s + bs]
                yield {
                    "images": self.val_features.get(np.arange(s, s + len(part))),
                    "ids": [r.id for r in part],
                    "references": [list(r.captions) for r in part],
                }
            return
        from mlx_caption.data.pipeline import eval_stream

        for batch in eval_stream(self.val, self.preprocess, bs):
            yield {
                "images": batch["pixels"],
                "ids": batch["ids"],
                "references": batch["references"],
            }

    # ------------------------------------------------------------------ what images look like

    def image_look(self) -> ImageLook:
        """What the training images look like, measured on up to ``LOOK_SAMPLE`` of them spread
        over the set (see :mod:`mlx_caption.data.look`); the synthetic generator adds its
        object sizes. The model's config records it for the web page's drawing canvas."""
        if self._look is None:
            step = max(1, len(self.train) // LOOK_SAMPLE)
            sample = self.train[::step][:LOOK_SAMPLE]
            sizes = OBJECT_DIAMETERS if self.cfg.data.synthetic else None
            self._look = measure_look((load_image(r.image) for r in sample), sizes)
        return self._look

    # ------------------------------------------------------------------ frozen features

    def prepare_features(self, model, progress: bool = False) -> None:
        """Encoder grids of the training images and the validation subset (frozen mode).

        They come from :class:`~mlx_caption.data.features.FeatureCache` (computed on the first
        run, read afterwards). Rank 0 builds first; the other ranks then find the cache (same
        host) or build their own copy (another host).
        """
        self.features = self._cached_features(model, self.train, progress)
        if self.val:
            self.val_features = self._cached_features(model, self.val, progress)

    def _cached_features(self, model, records: list[Record], progress: bool):
        from mlx_caption.data.features import FeatureCache

        cache = FeatureCache(self.cache_dir)
        store = None
        with eval_mode(model):
            for turn in (True, False):
                if self.world.is_main == turn:
                    store = cache.get_or_build(
                        model.encoder,
                        records,
                        self.preprocess,
                        dtype=self.cfg.data.feature_dtype,
                        encode_fn=model.encode_features,
                        progress=progress and self.world.is_main,
                    )
                barrier(self.world)
        return store


def default_feature_cache() -> Path:
    """Shared feature cache root (entries are keyed by fingerprint, so sharing is safe)."""
    root = os.environ.get("MLX_CAPTION_CACHE") or Path.home() / ".cache" / "mlx_caption"
    return Path(root) / "features"


def _synthetic(spec: dict[str, Any], root: Path, world: World) -> Path:
    """Generate (once) the synthetic data set a recipe asks for; return its JSON path."""
    from mlx_caption.data.synthetic import DATASET_FILE, write_synthetic_dataset

    allowed = {"images", "size", "seed", "max_objects"}
    unknown = set(spec) - allowed
    if unknown:
        raise UserError(f"data.synthetic: unknown keys {sorted(unknown)} (use {sorted(allowed)})")
    images, size, seed, objects = (
        int(spec.get("images", 2000)),
        int(spec.get("size", 64)),
        int(spec.get("seed", 0)),
        int(spec.get("max_objects", 3)),
    )
    folder = root / f"synthetic-{images}-{size}-{seed}"
    if objects != 3:  # the default keeps the folder name older runs wrote
        folder = folder.with_name(f"{folder.name}-{objects}objects")
    path = folder / DATASET_FILE
    # Rank 0 writes first; ranks on other hosts (no shared disk) then write their own copy.
    for turn in (True, False):
        if world.is_main == turn and not path.is_file():
            write_synthetic_dataset(
                folder, images=images, seed=seed, size=size, max_objects=objects
            )
        barrier(world)
    return path
