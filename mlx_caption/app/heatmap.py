"""Cross-attention heat maps: which part of the image each word of a caption looked at.

The decoder's cross-attention gives, for every generated token, one weight per image token:
the class token followed by the patch grid in row-major order. Here those weights become
pictures: tokens are grouped into words, the class token is dropped, the patch weights are
reshaped to the grid, upsampled to the image and overlaid with a colour map. Pure NumPy and
Pillow, so it is unit-tested without a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from mlx_caption.data.preprocess import PreprocessConfig


def patch_grid(weights: np.ndarray, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Reshape one token's attention over the image tokens to the (rows, cols) patch grid.

    ``weights`` has one value per image token: ``rows * cols`` patches, optionally preceded
    by a class token and registers (dropped: they have no place in the image). Without
    ``grid`` the grid is taken to be square, after at most a class token.
    """
    w = np.asarray(weights, dtype=np.float32).reshape(-1)
    n = w.size
    if grid is not None:
        rows, cols = grid
        if n < rows * cols:
            raise ValueError(f"{n} attention weights do not fit a {rows}x{cols} patch grid")
        return w[n - rows * cols :].reshape(rows, cols)
    side = math.isqrt(n)
    if side * side == n and n > 1:
        return w.reshape(side, side)
    side = math.isqrt(n - 1)
    if n > 1 and side * side == n - 1:
        return w[1:].reshape(side, side)
    raise ValueError(f"{n} attention weights are neither a square grid nor class token + grid")


def normalize(grid: np.ndarray) -> np.ndarray:
    """Scale to 0..1 (min to max); a flat map becomes all zeros rather than NaN."""
    g = np.asarray(grid, dtype=np.float32)
    lo, hi = float(g.min()), float(g.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros_like(g)
    return (g - lo) / (hi - lo)


def upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``size`` = (width, height), as float32."""
    img = Image.fromarray(np.asarray(grid, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _colormap(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table from a matplotlib colour map (no pyplot, no backend)."""
    import matplotlib

    lut = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.rint(lut * 255).astype(np.uint8)


def overlay(
    image: Image.Image, grid: np.ndarray, alpha: float = 0.5, cmap: str = "inferno"
) -> Image.Image:
    """The image with ``grid`` (a patch map) upsampled over it in colour.

    Where attention is low the picture is also dimmed, so the attended region stands out
    even with a colour map that is bright at both ends.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    heat = upsample(normalize(grid), image.size)
    heat = np.clip(heat, 0.0, 1.0)
    colour = _colormap(cmap)[np.rint(heat * 255).astype(np.int64)].astype(np.float32)
    dimmed = rgb * (0.35 + 0.65 * heat[..., None])
    out = (1.0 - alpha) * dimmed + alpha * colour
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def model_view(image: Image.Image, cfg: PreprocessConfig, size: int | None = None) -> Image.Image:
    """The part of ``image`` the encoder sees (the centre crop, or all of it when the
    processor squashes the whole image), in original pixels.

    The attention grid covers the crop, not the whole upload, so the heat map must be laid
    over the same region. ``size`` resizes the result to a square thumbnail.
    """
    w, h = image.size
    if cfg.do_center_crop and cfg.resize_mode != "exact":
        # Resize the shortest edge to R, then crop C x C from the centre: in original pixels
        # that is a centred square of side C * min(w, h) / R (C > R would pad; we clamp).
        scale = min(w, h) / float(cfg.resize_shortest_edge)
        cw = min(w, round(cfg.crop_size * scale))
        ch = min(h, round(cfg.crop_size * scale))
        left, top = (w - cw) // 2, (h - ch) // 2
        image = image.crop((left, top, left + cw, top + ch))
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def group_words(token_ids: Sequence[int], decode: Callable[[list[int]], str]) -> list[list[int]]:
    """Positions of the tokens that make up each word of the decoded caption.

    Works for any tokenizer (byte-level BPE, WordPiece, word level) by decoding growing
    prefixes: a token that adds a word to the decoded text starts a new group, one that
    does not (a sub-word piece) joins the current one. Result ``i`` belongs to word ``i`` of
    ``decode(token_ids).split()``.
    """
    groups: list[list[int]] = []
    for pos in range(len(token_ids)):
        words = len(decode(list(token_ids[: pos + 1])).split())
        if words > len(groups):
            # A token can only start the next word; if it closes several at once (rare, e.g.
            # a byte that completes a character), its weight goes to the last one.
            while len(groups) < words:
                groups.append([])
            groups[-1].append(pos)
        elif groups:
            groups[-1].append(pos)
        # A leading token that decodes to nothing yet (a partial byte) is dropped.
    return groups


def word_maps(
    token_ids: Sequence[int],
    attention: np.ndarray,
    decode: Callable[[list[int]], str],
    grid: tuple[int, int] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """(word, patch-grid map) for each word of a caption.

    ``attention`` is (len(token_ids), image tokens): one cross-attention row per generated
    token (heads and layers already averaged). A word's map is the mean of its tokens' maps.
    """
    att = np.asarray(attention, dtype=np.float32)
    if att.ndim != 2 or att.shape[0] < len(token_ids):
        raise ValueError(
            f"attention of shape {att.shape} does not cover {len(token_ids)} caption tokens"
        )
    words = decode(list(token_ids)).split()
    groups = group_words(token_ids, decode)
    out: list[tuple[str, np.ndarray]] = []
    for word, positions in zip(words, groups, strict=False):
        maps = [patch_grid(att[p], grid) for p in positions]
        out.append((word, np.mean(maps, axis=0)))
    return out
