"""The search loops: greedy and sampling over independent rows, and beam search.

Both drive one compiled step (:mod:`.step`): the rows of all images are one batch, grouped
by image; the image memory (cross-attention keys/values, or an image prefix's) is computed
once per image and serves all its rows; the self-attention keys/values live in preallocated
buffers, so after the first step (the start tokens and prompt) every step has the same shapes.

Greedy and sampling keep the chosen tokens on the device and feed them straight into the
next step; the host reads step ``t`` while the device already runs step ``t + 1``
(``mx.async_eval``), so the only per-token Python work is building one small graph.
Beam search (and ``no_repeat_ngram_size``) need the host each step: one ``mx.eval`` of the
top candidates, then a little bookkeeping in NumPy (:mod:`.beams`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption.generate import beams
from mlx_caption.generate.config import DecodingConfig
from mlx_caption.generate.logits import ngram_bans, token_biases
from mlx_caption.generate.step import StepSpec, get_step


@dataclass
class DecodingRun:
    """What one call decodes: the model, the resolved options, the rows and their prefix.

    ``prefix`` (the model's start tokens, then the prompt's ids) is fed at the first step;
    step ``t >= 1`` feeds the token chosen at step ``t - 1`` at position ``len(prefix) + t - 1``.
    """

    model: Any
    cfg: DecodingConfig
    rows: int
    prefix: list[int]

    def __post_init__(self) -> None:
        self.vocab = self.model.vocab_size
        self.special = self.model.special_tokens
        self.bias, self.no_end_bias = token_biases(self.vocab, self.special, self.cfg.ban_unk)

    def empty_cache(self) -> list[tuple[mx.array, mx.array]]:
        length = len(self.prefix) - 1 + self.cfg.max_length
        return [c.state for c in self.model.make_cache(self.rows, length)]

    def first_tokens(self) -> mx.array:
        return mx.array([self.prefix] * self.rows, dtype=mx.int32)

    def offset(self, t: int) -> mx.array:
        return mx.array(0 if t == 0 else len(self.prefix) + t - 1, dtype=mx.int32)

    def bias_at(self, t: int) -> mx.array:
        return self.no_end_bias if t < self.cfg.min_length else self.bias


def decode_rows(run: DecodingRun, memory: Any) -> tuple[np.ndarray, ...]:
    """Greedy or sampled decoding of ``run.rows`` independent sequences.

    Returns host arrays: tokens (rows, max_length), logprobs (rows, max_length), lengths,
    finished and attention (rows, max_length, T) or None.
    """
    cfg, rows = run.cfg, run.rows
    max_len = cfg.max_length
    step = get_step(run.model, StepSpec.of(cfg, run.model), cfg.compile)
    host_ngrams = cfg.no_repeat_ngram_size > 0

    cache_state = run.empty_cache()
    extra = {"done": mx.zeros((rows,), dtype=mx.bool_)}
    if cfg.strategy == "sample":
        extra["key"] = mx.random.key(secrets.randbits(63) if cfg.seed is None else cfg.seed)
    if cfg.repetition_penalty != 1.0:
        extra["seen"] = mx.zeros((rows, run.vocab), dtype=mx.bool_)

    toks = np.full((rows, max_len), run.special.pad, dtype=np.int64)
    lps = np.zeros((rows, max_len), dtype=np.float64)
    lengths = np.zeros(rows, dtype=np.int64)
    finished = np.zeros(rows, dtype=bool)
    attn = None

    def collect(t: int, out: dict) -> bool:
        nonlocal attn
        tok, lp, done = np.array(out["tokens"]), np.array(out["logprob"]), np.array(out["done"])
        alive = ~finished
        toks[alive, t] = tok[alive]
        lps[alive, t] = lp[alive]
        lengths[alive] += 1
        if "attention" in out:
            att = np.array(out["attention"])
            if attn is None:
                attn = np.zeros((rows, max_len, att.shape[-1]), dtype=np.float32)
            attn[alive, t] = att[alive]
        finished[:] = done
        return bool(done.all())

    tokens = run.first_tokens()
    pending = None
    for t in range(max_len):
        if host_ngrams:
            # The bans need step t-1's tokens on the host: no overlap in this mode.
            if pending is not None and collect(t - 1, pending):
                pending = None
                break
            pending = None
            extra["ban"] = mx.array(ngram_bans(toks, lengths, cfg.no_repeat_ngram_size, run.vocab))
        out = step(tokens, run.offset(t), cache_state, memory, run.bias_at(t), extra)
        cache_state = out["cache"]
        extra["done"] = out["done"]
        for name in ("key", "seen"):
            if name in out:
                extra[name] = out[name]
        tokens = out["tokens"][:, None]
        # Start step t on the device, then read step t-1 while it runs.
        mx.async_eval(out)
        if pending is not None and collect(t - 1, pending):
            pending = None  # step t ran for nothing: every row had already ended
            break
        pending = out
    if pending is not None:  # the loop ran to max_length
        collect(max_len - 1, pending)
    return toks, lps, lengths, finished, attn


def beam_search(run: DecodingRun, memory: Any, images: int) -> list[list[beams.Hypothesis]]:
    """Beam search; returns per image its hypotheses, best first (at most ``num_beams``)."""
    cfg, model = run.cfg, run.model
    k_beams, max_len = cfg.num_beams, cfg.max_length
    rows = images * k_beams
    n_cand = min(2 * k_beams, k_beams * run.vocab)
    first_step = get_step(model, StepSpec.of(cfg, model, False, n_cand), cfg.compile)
    next_step = get_step(model, StepSpec.of(cfg, model, True, n_cand), cfg.compile)
    cache_state = run.empty_cache()
    extra = {}
    if cfg.repetition_penalty != 1.0:
        extra["seen"] = mx.zeros((rows, run.vocab), dtype=mx.bool_)

    # Only the first beam of each image is live at the start (the others are copies).
    beam_scores = np.full((images, k_beams), -np.inf)
    beam_scores[:, 0] = 0.0
    history = np.full((rows, max_len), run.special.pad, dtype=np.int64)
    attn_hist = None
    finished = [beams.FinishedHypotheses(k_beams) for _ in range(images)]
    done = np.zeros(images, dtype=bool)

    tokens = run.first_tokens()
    step = first_step
    for t in range(max_len):
        extra["beam_scores"] = mx.array(beam_scores.astype(np.float32))
        if cfg.no_repeat_ngram_size > 0:
            ban = ngram_bans(history, np.full(rows, t), cfg.no_repeat_ngram_size, run.vocab)
            extra["ban"] = mx.array(ban)
        out = step(tokens, run.offset(t), cache_state, memory, run.bias_at(t), extra)
        mx.eval(out)
        cache_state = out["cache"]
        if "seen" in out:
            extra["seen"] = out["seen"]
        if "attention" in out:
            if attn_hist is None:
                attn_hist = np.zeros((rows, max_len, out["attention"].shape[-1]), np.float32)
            attn_hist[:, t] = np.array(out["attention"])

        def finish(
            row: int, token: int, score: float, norm: float, t=t, history=history, attn=attn_hist
        ) -> beams.Hypothesis:
            # This step's rows, before the beams move: the hypothesis ends here.
            att = None if attn is None else attn[row, : t + 1].copy()
            ids = [*history[row, :t].tolist(), token]
            return beams.Hypothesis(score / norm, score, ids, token == run.special.end, att)

        nxt = beams.advance(
            np.array(out["candidates"]),
            np.array(out["scores"]).astype(np.float64),
            finished,
            done,
            num_beams=k_beams,
            vocab=run.vocab,
            end=run.special.end,
            pad=run.special.pad,
            length=t + 1,
            length_penalty=cfg.length_penalty,
            early_stopping=cfg.early_stopping,
            last=t == max_len - 1,
            finish=finish,
        )
        history = history[nxt.rows]
        history[:, t] = nxt.tokens
        if attn_hist is not None:
            attn_hist = attn_hist[nxt.rows]
        beam_scores = nxt.scores
        if done.all():
            break
        extra["reorder"] = mx.array(nxt.rows.astype(np.int32))
        tokens = mx.array(nxt.tokens.astype(np.int32))[:, None]
        step = next_step
    return [f.items for f in finished]
