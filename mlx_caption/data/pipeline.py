"""Data streams: mlx-data for training, exact CLIP preprocessing for evaluation.

Training (:class:`TrainStream`): the epoch's plan (image order and which captions) is drawn
in NumPy from ``(seed, epoch)`` alone, so batch ``b`` of epoch ``e`` is the same whatever ran
before, and a resumed run starts at ``start_batch`` without reading the batches it skips.
Captions are tokenized for the epoch in one batched call. mlx-data then decodes, resizes
(shortest side, bilinear: the fast path, fine for training), center-crops and batches, with
``Buffer.ordered_prefetch`` so background threads never reorder samples. Normalization (and
the optional random-crop augmentation, drawn from the same seeded generator) runs on whole
batches in NumPy. No horizontal flip by default: captions say "left" and "right".

Bad files never reach mlx-data (a corrupt JPEG raises inside its iteration and ends the
epoch): records are validated once up front (:mod:`mlx_caption.data.sources`) and dropped.
Files that mlx-data would decode wrongly (grayscale comes back with one channel, alpha is
dropped, WebP is unreadable, EXIF rotation is ignored) are converted once to RGB PNGs by
:func:`mlx_caption.data.preprocess.load_image`.

Evaluation (:class:`EvalStream`): ordered, one item per image with its id and references,
preprocessed exactly as CLIP does (Pillow bicubic) in a few threads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mlx_caption.data.preprocess import PreprocessConfig
from mlx_caption.data.sources import ImageValidator, Record, Verdict, validate_records
from mlx_caption.errors import UserError
from mlx_caption.tokenizer import CaptionTokenizer

AUGMENT_MARGIN = 0.125  # random-crop augmentation: crop from a square this much larger


def default_convert_dir() -> Path:
    """Where converted copies of odd image files go (one PNG per file version)."""
    return Path(tempfile.gettempdir()) / "mlx_caption_converted"


def native_path(path: str, verdict: Verdict, convert_dir: Path) -> str:
    """A path mlx-data decodes faithfully: the file itself, or a converted RGB PNG copy."""
    if verdict.native:
        return path
    st = os.stat(path)
    key = hashlib.sha1(f"{path}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()
    out = convert_dir / f"{key}.png"
    if not out.exists():
        from mlx_caption.data.preprocess import load_image

        convert_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{key}.{os.getpid()}.tmp.png")
        load_image(path).save(tmp, format="PNG", compress_level=1)
        tmp.replace(out)
    return str(out)


def _normalize(pixels: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    scale = np.float32(cfg.rescale_factor)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)
    std = np.asarray(cfg.image_std, dtype=np.float32)
    # (x * s - mean) / std as one multiply-add.
    return pixels.astype(np.float32) * (scale / std) - mean / std


class TrainStream:
    """One epoch of training batches (iterate it once; build a new one per epoch).

    Yields ``{"pixels": float32 (B, H, W, 3), "tokens": int32 (B*k, L), "index": int64 (B,)}``
    where ``B`` is ``batch_size`` images, ``k`` is ``captions_per_image`` (caption rows of
    image ``i`` are rows ``i*k .. i*k+k-1``), and ``index`` points into the ``records`` passed
    in. With ``pixels=False`` the images are not loaded (for a feature cache: look the grids
    up by ``index``). Every batch is full: the last ragged one is dropped.

    Options: ``captions`` ("random": one caption per image, drawn per epoch; "all": every
    (image, caption) pair is a sample), ``captions_per_image`` (k caption rows per image),
    ``augment`` (seeded random crop), ``hflip`` (off: captions name left and right),
    ``pixels`` (False: tokens and indices only), ``prefetch``, ``threads``, ``validator``,
    ``convert_dir``. ``start_batch`` skips the epoch's first batches without reading them.
    """

    def __init__(
        self,
        records: Sequence[Record],
        tokenizer: CaptionTokenizer,
        preprocess_cfg: PreprocessConfig,
        batch_size: int,
        max_length: int,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        *,
        captions: str = "random",
        captions_per_image: int = 1,
        augment: bool = False,
        hflip: bool = False,
        pixels: bool = True,
        prefetch: int = 4,
        threads: int = 2,
        validator: ImageValidator | None = None,
        convert_dir: str | Path | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        if captions not in ("random", "all"):
            raise UserError(f"captions must be 'random' or 'all', not {captions!r}")
        if captions_per_image < 1 or (captions == "all" and captions_per_image != 1):
            raise UserError("captions_per_image must be >= 1 (and 1 when captions='all')")
        if start_batch < 0:
            raise UserError(f"start_batch must be >= 0, got {start_batch}")
        self.records = records
        self.tokenizer = tokenizer
        self.cfg = preprocess_cfg
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.captions_per_image = captions_per_image
        self.augment, self.hflip, self.load_pixels = augment, hflip, pixels
        self.prefetch, self.threads = max(1, prefetch), max(1, threads)
        self.convert_dir = Path(convert_dir) if convert_dir else default_convert_dir()

        report = validate_records(records, validator=validator)
        self.usable = report.ok
        self.verdicts = report.verdicts
        self.dropped = {"missing": len(report.missing), "corrupt": len(report.corrupt)}
        if not self.usable:
            raise UserError(f"no usable images among {len(records)} records ({self.dropped})")

        # The whole epoch's plan depends on (seed, epoch) only: resuming reproduces it.
        rng = np.random.default_rng([seed, epoch])
        if captions == "all":
            items = [(i, [c]) for i in self.usable for c in range(len(records[i].captions))]
            order = rng.permutation(len(items))
            self._plan = [items[j] for j in order]
        else:
            order = rng.permutation(np.asarray(self.usable))
            plan = []
            for i in order:
                n = len(records[i].captions)
                k = captions_per_image
                picks = rng.choice(n, size=k, replace=n < k)
                plan.append((int(i), [int(c) for c in picks]))
            self._plan = plan
        self.batches_per_epoch = len(self._plan) // batch_size
        if self.batches_per_epoch == 0:
            raise UserError(
                f"batch_size {batch_size} is larger than the {len(self._plan)} samples of an "
                "epoch: no full batch"
            )
        # Augmentation offsets come from their own generator, keyed by batch number.
        self._aug_seed = [seed, epoch, 1]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def _samples(self) -> tuple[list[dict[str, Any]], int]:
        lo = self.start_batch * self.batch_size
        hi = self.batches_per_epoch * self.batch_size
        part = self._plan[lo:hi]
        texts = [self.records[i].captions[c] for i, cs in part for c in cs]
        k = len(part[0][1]) if part else 1
        tokens = self.tokenizer.encode_batch(texts, self.max_length).reshape(
            len(part), k, self.max_length
        )
        samples = []
        for row, (i, _) in enumerate(part):
            sample = {"tokens": tokens[row], "index": np.array(i, dtype=np.int64)}
            if self.load_pixels:
                path = native_path(self.records[i].image, self.verdicts[i], self.convert_dir)
                sample["file"] = path.encode()
            samples.append(sample)
        return samples, k

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if len(self) == 0:
            return
        import mlx.data as dx

        samples, k = self._samples()
        buf = dx.buffer_from_vector(samples)
        crop = self.cfg.crop_size
        side = self.cfg.resize_shortest_edge
        if self.load_pixels:
            square = crop
            if self.augment:
                square = int(round(crop * (1 + AUGMENT_MARGIN)))
                side = int(round(side * (1 + AUGMENT_MARGIN)))
            buf = buf.load_image("file").rename_key("file", "pixels")
            if self.cfg.resize_mode == "exact":
                buf = buf.image_resize("pixels", square, square)
            else:
                buf = buf.image_resize_smallest_side("pixels", side)
                buf = buf.image_center_crop("pixels", square, square)
        # Ordered prefetch over whole batches: threads decode in parallel, order is kept.
        stream = buf.batch(self.batch_size).ordered_prefetch(self.prefetch, self.threads)
        for b, batch in enumerate(stream, start=self.start_batch):
            out = {
                "tokens": batch["tokens"].reshape(-1, self.max_length),
                "index": batch["index"],
            }
            if self.load_pixels:
                out["pixels"] = self._finish_pixels(batch["pixels"], b, crop)
            yield out

    def _finish_pixels(self, px: np.ndarray, batch_no: int, crop: int) -> np.ndarray:
        if px.ndim != 4 or px.shape[-1] != 3:
            raise RuntimeError(f"unexpected image batch shape {px.shape}")  # a converter bug
        if self.augment or self.hflip:
            rng = np.random.default_rng([*self._aug_seed, batch_no])
            if self.augment:
                room = px.shape[1] - crop
                tops = rng.integers(0, room + 1, size=len(px))
                lefts = rng.integers(0, room + 1, size=len(px))
                px = np.stack(
                    [p[t : t + crop, s : s + crop] for p, t, s in zip(px, tops, lefts, strict=True)]
                )
            if self.hflip:
                flip = rng.random(len(px)) < 0.5
                px = np.where(flip[:, None, None, None], px[:, :, ::-1], px)
        return _normalize(px, self.cfg)


class EvalStream:
    """Ordered evaluation batches with exact CLIP preprocessing.

    Yields ``{"pixels": float32 (b, H, W, 3), "index": int64 (b,), "ids": list,
    "references": list[list[str]]}``; ``b`` is ``batch_size`` except in the last batch.
    Unusable images are dropped (``dropped`` counts them).
    """

    def __init__(
        self,
        records: Sequence[Record],
        preprocess_cfg: PreprocessConfig,
        batch_size: int,
        *,
        workers: int = 2,
        validator: ImageValidator | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        self.records = records
        self.cfg = preprocess_cfg
        self.batch_size = batch_size
        self.workers = max(1, workers)
        report = validate_records(records, validator=validator)
        self.usable = report.ok
        self.dropped = {"missing": len(report.missing), "corrupt": len(report.corrupt)}

    def __len__(self) -> int:
        return -(-len(self.usable) // self.batch_size)

    def _load(self, i: int) -> np.ndarray:
        from mlx_caption.data.preprocess import load_image, preprocess_image

        return preprocess_image(load_image(self.records[i].image), self.cfg)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        chunks = [
            self.usable[s : s + self.batch_size]
            for s in range(0, len(self.usable), self.batch_size)
        ]
        with ThreadPoolExecutor(self.workers) as pool:
            pending: list[tuple[list[int], list[Future]]] = []
            ahead = 2  # batches in flight: the next one decodes while this one is used
            for chunk in chunks[:ahead]:
                pending.append((chunk, [pool.submit(self._load, i) for i in chunk]))
            for n in range(len(chunks)):
                chunk, futures = pending.pop(0)
                if n + ahead < len(chunks):
                    nxt = chunks[n + ahead]
                    pending.append((nxt, [pool.submit(self._load, i) for i in nxt]))
                yield {
                    "pixels": np.stack([f.result() for f in futures]),
                    "index": np.asarray(chunk, dtype=np.int64),
                    "ids": [self.records[i].id for i in chunk],
                    "references": [list(self.records[i].captions) for i in chunk],
                }


# The names callers use: a stream is built per epoch (training) or per pass (evaluation).
train_stream = TrainStream
eval_stream = EvalStream
