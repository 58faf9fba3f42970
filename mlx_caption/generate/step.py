"""The decoding step: model + constraints + token choice, one compiled function.

Every strategy runs this step; what it does beyond the model's ``decode_step`` (penalties,
bans, the choice of token or of beam candidates) is fixed for a whole run by a
:class:`StepSpec`, which also keys the cache of compiled steps kept on the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from mlx_caption.generate import logits as processors
from mlx_caption.generate.config import DecodingConfig
from mlx_caption.models.layers import KVCache


@dataclass(frozen=True)
class StepSpec:
    """What is fixed for a whole decoding run (and keys the compiled-step cache)."""

    strategy: str
    attention: bool
    reorder: bool
    repetition_penalty: float
    ngram_bans: bool
    temperature: float
    top_k: int
    top_p: float
    candidates: int  # beam search: candidates kept per image
    end: int
    pad: int

    @classmethod
    def of(
        cls, cfg: DecodingConfig, model: Any, reorder: bool = False, candidates: int = 0
    ) -> StepSpec:
        sampling = cfg.strategy == "sample"
        return cls(
            strategy=cfg.strategy,
            attention=cfg.return_attention,
            reorder=reorder,
            repetition_penalty=float(cfg.repetition_penalty),
            ngram_bans=cfg.no_repeat_ngram_size > 0,
            temperature=float(cfg.temperature) if sampling else 1.0,
            top_k=cfg.top_k if sampling else 0,
            top_p=float(cfg.top_p) if sampling else 1.0,
            candidates=candidates,
            end=model.special_tokens.end,
            pad=model.special_tokens.pad,
        )


def step_fn(model: Any, spec: StepSpec) -> Callable:
    """A pure function of arrays (what ``mx.compile`` needs):
    ``(tokens, offset, cache, memory, bias, extra) -> dict``.

    ``tokens`` (N, L) are the previous choices (the start tokens and prompt at the first
    step), written at position ``offset``. ``extra`` holds the per-run state: ``reorder``
    (beam rows), ``seen`` (repetition penalty), ``ban`` (n-gram bans from the host),
    ``done`` and ``key`` (greedy/sampling), ``beam_scores``. The result holds the new cache
    and state and, for greedy/sampling, the chosen tokens and their log-probs; for beam
    search the top candidates per image.
    """

    def step(tokens, offset, cache_state, memory, bias, extra):
        caches = [KVCache(k, v, offset) for k, v in cache_state]
        out = {}
        if spec.reorder:
            for c in caches:
                c.reorder(extra["reorder"])
        logits, attention = model.decode_step(tokens, memory, caches, offset, spec.attention)
        if spec.attention:
            out["attention"] = attention[:, -1, :]
        out["cache"] = [c.state for c in caches]
        logits = logits[:, -1, :]

        if spec.repetition_penalty != 1.0:
            seen = extra["seen"][extra["reorder"]] if spec.reorder else extra["seen"]
            fed = (tokens[..., None] == mx.arange(logits.shape[-1])).any(axis=1)
            seen = mx.logical_or(seen, fed)
            out["seen"] = seen
            logits = processors.repetition_penalty(logits, seen, spec.repetition_penalty)
        logits = logits + bias
        if spec.ngram_bans:
            logits = mx.where(extra["ban"], -mx.inf, logits)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)

        if spec.strategy == "beam":
            n_images = logp.shape[0] // extra["beam_scores"].shape[1]
            cand = logp.reshape(n_images, -1, logp.shape[-1]) + extra["beam_scores"][..., None]
            cand = cand.reshape(n_images, -1)
            idx = mx.argpartition(-cand, spec.candidates - 1, axis=-1)[:, : spec.candidates]
            out["candidates"] = idx
            out["scores"] = mx.take_along_axis(cand, idx, axis=-1)
            return out

        if spec.strategy == "sample":
            key, sub = mx.random.split(extra["key"])
            out["key"] = key
            scaled = processors.top_k(logp / spec.temperature, spec.top_k)
            choice = mx.random.categorical(processors.top_p(scaled, spec.top_p), key=sub)
        else:
            choice = mx.argmax(logp, axis=-1)
        lp = mx.take_along_axis(logp, choice[:, None], axis=-1)[:, 0]
        done = extra["done"]
        choice = mx.where(done, spec.pad, choice).astype(mx.int32)
        out["tokens"] = choice
        out["logprob"] = mx.where(done, 0.0, lp)
        out["done"] = mx.logical_or(done, choice == spec.end)
        return out

    return step


_MAX_TRACES = 16


def get_step(model: Any, spec: StepSpec, compiled: bool) -> Callable:
    """The step for ``spec``, compiled once per model and spec when ``compiled``."""
    if not compiled:
        return step_fn(model, spec)
    # Kept on the model so repeated calls reuse the traces; ``inputs=model.state`` makes the
    # compiled step read the current weights, so training between calls is seen.
    cache = model.__dict__.setdefault("_compiled_steps", {})
    if spec not in cache:
        if len(cache) >= _MAX_TRACES:
            cache.clear()
        cache[spec] = mx.compile(step_fn(model, spec), inputs=model.state)
    return cache[spec]
