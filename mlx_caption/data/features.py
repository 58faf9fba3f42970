"""Feature cache: a frozen encoder's token grid for every image, computed once.

``FeatureCache(root).get_or_build(encoder, records, preprocess_cfg)`` returns a
:class:`FeatureStore` whose ``get(indices)`` gives the ``(B, T, D)`` grids of those records
(``encoder(pixels).last_hidden_state``, what the captioner's projector reads).

The cache folder is named by a fingerprint: sha256 over the encoder (its config and a hash
of every weight, or a key the caller vouches for, such as a weights-file checksum), the
preprocessing config, the storage dtype and the ordered image list with each file's size and
mtime. The same inputs find the same folder (a hit reads instead of recomputing); any change
lands in a new folder (nothing stale is ever read).

Inside: ``shard-NNNNN.safetensors`` (rows ``k*shard_size ..``) and ``manifest.json``. Each
shard is written to a temporary file and renamed, then the manifest is rewritten the same
way, so an interrupted build leaves only whole shards behind and the next call computes the
missing ones. Images that cannot be read get zero rows and ``valid = False``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlx_caption import backend
from mlx_caption.data.preprocess import PreprocessConfig
from mlx_caption.data.sources import ImageValidator, Record
from mlx_caption.errors import UserError
from mlx_caption.models.base import tokens_per_image

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def encoder_fingerprint(encoder: Any) -> str:
    """sha256 of an encoder's config and every parameter (name, shape, dtype, bytes)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    h = hashlib.sha256()
    cfg = getattr(encoder, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(type(encoder).__name__.encode())
    for name, value in sorted(tree_flatten(encoder.parameters()), key=lambda kv: kv[0]):
        arr = np.asarray(value.astype(mx.float32) if value.dtype == mx.bfloat16 else value)
        h.update(f"{name}|{arr.shape}|{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def image_list_fingerprint(paths: Sequence[str]) -> str:
    """sha256 of the ordered image paths with their sizes and mtimes."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|-1|-1\n".encode())
    return h.hexdigest()


class FeatureStore:
    """Read access to a built cache: ``get(indices) -> (B, T, D)`` float32."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.path = folder
        self.manifest = manifest
        self.fingerprint: str = manifest["fingerprint"]
        self.num_images: int = manifest["num_images"]
        self.shard_size: int = manifest["shard_size"]
        self.tokens: int = manifest["tokens"]
        self.dim: int = manifest["dim"]
        self.dtype: str = manifest["dtype"]
        self._shards: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.num_images

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.num_images, self.tokens, self.dim)

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._shards:
            from safetensors.numpy import load_file

            self._shards[k] = load_file(str(self.path / self.manifest["shards"][str(k)]["file"]))
        return self._shards[k]

    @property
    def valid(self) -> np.ndarray:
        """bool (N,): False where the image could not be read (its row is zeros)."""
        n_shards = -(-self.num_images // self.shard_size)
        return np.concatenate([self._shard(k)["valid"].astype(bool) for k in range(n_shards)])

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Grids of these records, ``(len(indices), T, D)`` float32, in the order given."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_images):
            raise IndexError(f"feature index out of range 0..{self.num_images - 1}")
        out = np.empty((idx.size, self.tokens, self.dim), dtype=np.float32)
        shard_of = idx // self.shard_size
        for k in np.unique(shard_of):
            rows = np.nonzero(shard_of == k)[0]
            out[rows] = self._shard(int(k))["features"][idx[rows] - k * self.shard_size]
        return out


class FeatureCache:
    """Feature caches under one root folder, one subfolder per fingerprint."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def fingerprint(
        self,
        encoder: Any,
        paths: Sequence[str],
        preprocess_cfg: PreprocessConfig,
        dtype: str = "float32",
        encoder_key: str | None = None,
    ) -> str:
        """The cache key for these inputs (see the module docstring)."""
        parts = {
            "version": FORMAT_VERSION,
            "feature": "last_hidden_state",
            "encoder": encoder_key or encoder_fingerprint(encoder),
            "preprocess": preprocess_cfg.to_dict(),
            "dtype": dtype,
            "images": image_list_fingerprint(paths),
            "num_images": len(paths),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get_or_build(
        self,
        encoder: Any,
        records: Sequence[Record] | Sequence[str],
        preprocess_cfg: PreprocessConfig,
        batch_size: int = 32,
        *,
        dtype: str = "float32",
        shard_size: int = 1024,
        encoder_key: str | None = None,
        encode_fn: Callable[[Any], Any] | None = None,
        progress: bool = True,
        validator: ImageValidator | None = None,
    ) -> FeatureStore:
        """Return the cache for these inputs, computing whatever is missing.

        ``records`` are :class:`Record` objects or image paths; row ``i`` of the store is
        image ``i``. ``dtype`` "float16" halves the disk and memory (values come back as
        float32). ``encode_fn(pixels_mx) -> (B, T, D)`` overrides the default
        ``encoder(pixels).last_hidden_state``.
        """
        if dtype not in ("float32", "float16"):
            raise UserError(f"feature dtype must be float32 or float16, not {dtype!r}")
        if batch_size < 1 or shard_size < 1:
            raise UserError("batch_size and shard_size must be positive")
        paths = [r.image if isinstance(r, Record) else str(r) for r in records]
        if not paths:
            raise UserError("no images to compute features for")
        fp = self.fingerprint(encoder, paths, preprocess_cfg, dtype, encoder_key)
        folder = self.root / fp[:24]
        manifest_path = folder / MANIFEST
        manifest = self._read_manifest(manifest_path, fp)
        if manifest is not None and manifest.get("complete"):
            return FeatureStore(folder, manifest)

        folder.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            manifest = {
                "fingerprint": fp,
                "version": FORMAT_VERSION,
                "num_images": len(paths),
                "shard_size": shard_size,
                "dtype": dtype,
                "tokens": None,
                "dim": None,
                "preprocess": preprocess_cfg.to_dict(),
                "shards": {},
                "complete": False,
            }
        shard_size = manifest["shard_size"]  # a resumed build keeps its shard layout
        encode = encode_fn or (
            lambda px: backend.split_eval(
                lambda x: encoder(x).last_hidden_state, px, tokens=tokens_per_image(encoder)
            )
        )
        n_shards = -(-len(paths) // shard_size)
        todo = [k for k in range(n_shards) if str(k) not in manifest["shards"]]
        bar = None
        if progress:
            from tqdm import tqdm

            done = sum(manifest["shards"][s]["count"] for s in manifest["shards"])
            bar = tqdm(total=len(paths), initial=done, desc="encoding images", unit="img")
        try:
            for k in todo:
                lo, hi = k * shard_size, min(len(paths), (k + 1) * shard_size)
                feats, valid = self._encode_range(
                    paths[lo:hi], preprocess_cfg, batch_size, encode, validator, bar
                )
                if manifest["tokens"] is None:
                    manifest["tokens"], manifest["dim"] = int(feats.shape[1]), int(feats.shape[2])
                self._write_shard(folder, k, feats.astype(dtype), valid)
                manifest["shards"][str(k)] = {
                    "file": f"shard-{k:05d}.safetensors",
                    "count": hi - lo,
                }
                manifest["complete"] = len(manifest["shards"]) == n_shards
                _atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
        finally:
            if bar is not None:
                bar.close()
        manifest["complete"] = True
        _atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
        return FeatureStore(folder, manifest)

    @staticmethod
    def _read_manifest(path: Path, fp: str) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # damaged: rebuild
        if manifest.get("fingerprint") != fp or manifest.get("version") != FORMAT_VERSION:
            return None
        # Only shards whose files are really there count as done.
        manifest["shards"] = {
            k: v
            for k, v in manifest.get("shards", {}).items()
            if (path.parent / v["file"]).is_file()
        }
        return manifest

    @staticmethod
    def _write_shard(folder: Path, k: int, feats: np.ndarray, valid: np.ndarray) -> None:
        from safetensors.numpy import save_file

        final = folder / f"shard-{k:05d}.safetensors"
        tmp = folder / f"shard-{k:05d}.{os.getpid()}.tmp"
        save_file(
            {"features": np.ascontiguousarray(feats), "valid": valid.astype(np.uint8)}, str(tmp)
        )
        tmp.replace(final)

    @staticmethod
    def _encode_range(
        paths: Sequence[str],
        cfg: PreprocessConfig,
        batch_size: int,
        encode: Callable[[Any], Any],
        validator: ImageValidator | None,
        bar: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        import mlx.core as mx

        from mlx_caption.data.pipeline import EvalStream

        recs = [Record(p, ["-"], "all", i) for i, p in enumerate(paths)]
        stream = EvalStream(recs, cfg, batch_size, validator=validator)
        valid = np.zeros(len(paths), dtype=bool)
        feats: np.ndarray | None = None
        for batch in stream:
            grid = encode(mx.array(batch["pixels"]))
            mx.eval(grid)
            arr = np.asarray(grid.astype(mx.float32))
            if feats is None:
                feats = np.zeros((len(paths), *arr.shape[1:]), dtype=np.float32)
            feats[batch["index"]] = arr
            valid[batch["index"]] = True
            if bar is not None:
                bar.update(len(batch["index"]))
        if bar is not None:
            bar.update(len(paths) - int(valid.sum()))
        if feats is None:
            # No readable image in this shard: shape from one blank batch.
            blank = np.zeros((1, cfg.crop_size, cfg.crop_size, 3), dtype=np.float32)
            arr = np.asarray(encode(mx.array(blank)).astype(mx.float32))
            feats = np.zeros((len(paths), *arr.shape[1:]), dtype=np.float32)
        return feats, valid
