"""The entry points: :func:`decode` (image tokens -> captions), :func:`generate` (pixels ->
captions) and :func:`caption` (image files -> captions, with a model cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map
from PIL import Image

from mlx_caption import backend
from mlx_caption.data.preprocess import load_image, preprocess_image
from mlx_caption.errors import UserError
from mlx_caption.generate.beams import Hypothesis
from mlx_caption.generate.config import Caption, DecodingConfig
from mlx_caption.generate.search import DecodingRun, beam_search, decode_rows
from mlx_caption.loading import MODEL_FILE, load_captioner
from mlx_caption.models.base import eval_mode, tokens_per_image


def decode(
    decoder: Any, image_tokens: mx.array, tokenizer: Any, config: DecodingConfig
) -> list[Caption]:
    """Generate captions from a captioner's image tokens (``captioner.encode(pixels)``).

    ``decoder`` is the captioner's ``.decoder``, which speaks the engine's protocol (see
    :mod:`mlx_caption.generate`); ``tokenizer`` decodes its ids (``decode``) and encodes a
    prompt (``encode_text``).
    """
    images = image_tokens.shape[0]
    if images == 0:
        return []
    prompt_ids = tokenizer.encode_text(config.prompt) if config.prompt else []
    prefix = [*decoder.special_tokens.start, *prompt_ids]
    default_length = decoder.default_max_length
    if decoder.default_length_counts_prompt:  # as transformers counts a checkpoint's max_length
        default_length -= len(prompt_ids)
        if default_length < 1 and config.max_length is None:
            raise UserError(
                f"the prompt's {len(prompt_ids)} tokens leave no room in the model's default "
                "caption length; set max_length"
            )
    cfg = config.resolved(
        decoder.max_positions - len(prefix) + 1, default_length, decoder.default_early_stopping
    )
    with eval_mode(decoder):
        # One copy of each image's memory serves all its rows (beams or samples, grouped by
        # image): the decoder's attention reads it once per image (layers.attention.attend).
        # Made contiguous once: heads split by a transpose are views, which every step's
        # attention would otherwise copy again.
        memory = tree_map(mx.contiguous, decoder.decoding_memory(image_tokens))
        if cfg.strategy == "beam":
            run = DecodingRun(decoder, cfg, images * cfg.num_beams, prefix)
            per_image = beam_search(run, memory, images)
        else:
            n = cfg.num_return_sequences
            run = DecodingRun(decoder, cfg, images * n, prefix)
            per_image = _sampled_hypotheses(run, memory, images, n)
    return [_caption(hyps[: cfg.num_return_sequences], tokenizer, prompt_ids) for hyps in per_image]


def _sampled_hypotheses(run: DecodingRun, memory: Any, images: int, n: int) -> list[list]:
    toks, lps, lengths, finished, attn = decode_rows(run, memory)
    per_image = []
    for b in range(images):
        hyps = []
        for r in range(b * n, (b + 1) * n):
            logprob = float(lps[r, : lengths[r]].sum())
            att = None if attn is None else attn[r, : lengths[r]].copy()
            ids = toks[r, : lengths[r]].tolist()
            hyps.append(Hypothesis(logprob, logprob, ids, bool(finished[r]), att))
        hyps.sort(key=lambda h: -h.score)
        per_image.append(hyps)
    return per_image


def _caption(hyps: list[Hypothesis], tokenizer: Any, prompt_ids: list[int]) -> Caption:
    made = [
        Caption(
            text=tokenizer.decode([*prompt_ids, *h.tokens]),
            token_ids=h.tokens,
            score=float(h.score),
            logprob=float(h.logprob),
            finished=h.finished,
            attention=h.attention,
        )
        for h in hyps
    ]
    best = made[0]
    best.alternatives = made[1:]
    return best


def generate(
    model: Any,
    pixels: mx.array | np.ndarray,
    tokenizer: Any,
    strategy: str | None = None,
    *,
    config: DecodingConfig | None = None,
    **options: Any,
) -> list[Caption]:
    """Caption a batch of preprocessed images ``(B, H, W, 3)``.

    Args:
        model: a captioner (ours, a pretrained one, or a bridge captioner): ``encode`` and a
            ``decoder`` that speaks the engine's protocol.
        pixels: the images, preprocessed with the model's processor.
        tokenizer: the model's tokenizer.
        strategy: ``"greedy"``, ``"beam"`` or ``"sample"`` (overrides ``config.strategy``).
        config: a :class:`DecodingConfig`; ``options`` override its fields.

    Returns:
        One :class:`Caption` per image, in order.
    """
    cfg = config or DecodingConfig()
    if strategy is not None:
        options["strategy"] = strategy
    cfg = cfg.replace(**options)
    with eval_mode(model):
        pixels = mx.array(pixels)
        # An MLX captioner's encoder runs split over the CPU's cores (a no-op on a GPU).
        if isinstance(model, nn.Module):
            image_tokens = backend.split_eval(model.encode, pixels, tokens=tokens_per_image(model))
        else:
            image_tokens = model.encode(pixels)
    return decode(model.decoder, image_tokens, tokenizer, cfg)


_LOADED: dict[str, tuple[Any, Any]] = {}


def caption(
    images: Any,
    checkpoint: str | Path | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    batch_size: int = 16,
    **decoding: Any,
) -> list[Caption]:
    """Caption image files or PIL images with a pretrained or trained captioner.

    ``caption("cat.jpg", model="blip-base")[0].text`` captions a photo with BLIP (converted
    into the cache on first use).

    Args:
        images: a path, a PIL image, or a list of them.
        checkpoint: a zoo name (``"blip-base"``), a captioner folder or a Hugging Face hub id
            (see :func:`~mlx_caption.loading.load_captioner`); loaded once and kept.
        model: the same as ``checkpoint``, or an already loaded captioner (then give its
            ``tokenizer`` too).
        batch_size: images per forward pass.
        **decoding: :class:`DecodingConfig` fields (``strategy="beam"``, ``num_beams=3``,
            ``prompt="a picture of"``, ...).

    Returns:
        One :class:`Caption` per image, in order.
    """
    if isinstance(model, (str, Path)):
        if checkpoint is not None:
            raise UserError("give the captioner once: model= or checkpoint=")
        checkpoint, model = model, None
    if model is None:
        if checkpoint is None:
            raise UserError("give a captioner: a zoo name, a folder or a hub id (model=...)")
        # Keyed by the weights file's mtime too, so a checkpoint saved again is reloaded.
        weights = Path(checkpoint) / MODEL_FILE
        key = f"{checkpoint}@{weights.stat().st_mtime_ns if weights.is_file() else ''}"
        if key not in _LOADED:
            _LOADED.clear()  # keep one model in memory
            _LOADED[key] = load_captioner(checkpoint)
        model, tokenizer = _LOADED[key]
    elif tokenizer is None:
        raise UserError("a model needs its tokenizer")
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    prep = model.config.vision.preprocess
    cfg = DecodingConfig().replace(**decoding)
    out: list[Caption] = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        pixels = np.stack(
            [
                preprocess_image(im if isinstance(im, Image.Image) else load_image(im), prep)
                for im in chunk
            ]
        )
        out.extend(generate(model, pixels, tokenizer, config=cfg))
    return out
