"""Caption generation: greedy, beam search and sampling, batched over images, with a KV cache.

Every strategy runs the same decoding step: the images' rows (one per image for greedy,
``num_beams`` per image for beam search, ``num_return_sequences`` for sampling) are one
batch; the cross-attention keys/values of each image are computed once and repeated for
its rows; the self-attention keys/values live in preallocated per-layer buffers, so the
step has the same shapes at every position and is compiled once (``mx.compile``).

Greedy and sampling keep the chosen tokens on the device and feed them straight into the
next step; the host reads step ``t`` while the device already runs step ``t + 1``
(``mx.async_eval``), so the only per-token Python work is building one small graph.
Beam search (and ``no_repeat_ngram_size``) need the host each step: one ``mx.eval`` of the
top candidates, then a little bookkeeping in NumPy.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_caption.errors import UserError
from mlx_caption.models.attention import KVCache

PAD, START, END, UNK = 0, 1, 2, 3
STRATEGIES = ("greedy", "beam", "sample")


@dataclass
class DecodingConfig:
    """Options of :func:`generate`.

    Attributes:
        strategy: ``"greedy"``, ``"beam"`` or ``"sample"``.
        max_length: most tokens generated per caption (``<end>`` included); defaults to the
            decoder's ``max_length - 1`` (the length its training captions had).
        min_length: ``<end>`` is forbidden before this many tokens.
        num_beams: beams per image (beam search).
        length_penalty: beam hypotheses rank by ``logprob / length ** length_penalty``.
        early_stopping: beam search stops an image once it has ``num_beams`` finished
            hypotheses; if False, once no running beam can beat the worst of them.
        num_return_sequences: captions per image (the best plus ``alternatives``); by default
            all beams for beam search, one otherwise.
        temperature, top_k, top_p, seed: sampling (``top_k=0`` and ``top_p=1`` disable).
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0 disables).
        repetition_penalty: CTRL-style penalty (>1) on tokens already generated.
        ban_unk: never generate ``<unk>``.
        return_attention: attach cross-attention maps, one ``(T_image,)`` row per token.
        compile: compile the decoding step with ``mx.compile``.
    """

    strategy: str = "greedy"
    max_length: int | None = None
    min_length: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0
    early_stopping: bool = True
    num_return_sequences: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    ban_unk: bool = True
    return_attention: bool = False
    compile: bool = True

    def replace(self, **options: Any) -> DecodingConfig:
        """A copy with ``options`` changed; unknown names raise :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UserError(f"unknown decoding option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **options)


@dataclass
class Caption:
    """One generated caption.

    Attributes:
        text: decoded text (special tokens dropped).
        token_ids: generated ids (``<start>`` excluded), ending with ``<end>`` if ``finished``.
        score: ranking score: ``logprob / len(token_ids) ** length_penalty`` for beam search,
            ``logprob`` otherwise.
        logprob: sum of the tokens' log-probabilities (after the decoding constraints such as
            banned tokens, before temperature/top-k/top-p).
        finished: ``<end>`` was generated (False: cut at ``max_length``).
        alternatives: the other returned sequences (other beams or samples), best first.
        attention: ``(len(token_ids), T_image)`` cross-attention of each generated token over
            the image tokens, averaged over heads and layers; rows sum to 1.
    """

    text: str
    token_ids: list[int]
    score: float
    logprob: float
    finished: bool
    alternatives: list[Caption] = field(default_factory=list)
    attention: np.ndarray | None = None

    def attention_grid(self) -> np.ndarray:
        """Patch attention as ``(n_tokens, g, g)``, dropping the leading class token."""
        if self.attention is None:
            raise ValueError("generated without return_attention=True")
        patches = self.attention[:, 1:]
        g = math.isqrt(patches.shape[1])
        if g * g != patches.shape[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
        return patches.reshape(len(patches), g, g)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (attention as nested lists when present)."""
        d = {
            "caption": self.text,
            "score": self.score,
            "logprob": self.logprob,
            "token_ids": list(self.token_ids),
            "finished": self.finished,
            "alternatives": [
                {"caption": a.text, "score": a.score, "logprob": a.logprob}
                for a in self.alternatives
            ],
        }
        if self.attention is not None:
            d["attention"] = self.attention.tolist()
        return d


# ---------------------------------------------------------------------------------------
# Logit processing (pure array functions, traced into the compiled step)


def _apply_repetition_penalty(logits: mx.array, seen: mx.array, penalty: float) -> mx.array:
    penalised = mx.where(logits > 0, logits / penalty, logits * penalty)
    return mx.where(seen, penalised, logits)


def _ngram_bans(history: np.ndarray, lengths: np.ndarray, n: int, vocab: int) -> np.ndarray:
    """(N, vocab) booleans: tokens that would repeat an n-gram already in a row's history."""
    banned = np.zeros((len(history), vocab), dtype=bool)
    for r, (row, length) in enumerate(zip(history, lengths, strict=True)):
        seq = row[:length].tolist()
        if len(seq) < max(n - 1, 1):
            continue
        prefix = seq[len(seq) - n + 1 :] if n > 1 else []
        for i in range(len(seq) - n + 1):
            if seq[i : i + n - 1] == prefix:
                banned[r, seq[i + n - 1]] = True
    return banned


def _filter_top_k(logits: mx.array, k: int) -> mx.array:
    vocab = logits.shape[-1]
    if k <= 0 or k >= vocab:
        return logits
    kth = mx.partition(logits, vocab - k, axis=-1)[:, vocab - k : vocab - k + 1]
    return mx.where(logits < kth, -mx.inf, logits)


def _filter_top_p(logits: mx.array, p: float) -> mx.array:
    if p >= 1.0:
        return logits
    order = mx.argsort(-logits, axis=-1)
    sorted_logits = mx.take_along_axis(logits, order, axis=-1)
    probs = mx.softmax(sorted_logits, axis=-1, precise=True)
    # Drop a token when the mass before it already reaches p (the top token always stays).
    drop_sorted = (mx.cumsum(probs, axis=-1) - probs) >= p
    drop = mx.take_along_axis(drop_sorted, mx.argsort(order, axis=-1), axis=-1)
    return mx.where(drop, -mx.inf, logits)


def _token_biases(vocab: int, ban_unk: bool) -> tuple[mx.array, mx.array]:
    """Additive logit biases: the always-banned specials, and the same plus ``<end>``
    (used while the caption is shorter than ``min_length``)."""
    banned = np.zeros(vocab, dtype=bool)
    banned[[PAD, START] + ([UNK] if ban_unk and vocab > UNK else [])] = True
    base = np.where(banned, -np.inf, 0.0).astype(np.float32)
    banned[END] = True
    no_end = np.where(banned, -np.inf, 0.0).astype(np.float32)
    return mx.array(base), mx.array(no_end)


# ---------------------------------------------------------------------------------------
# The decoding step: model + constraints + token choice, one compiled function


@dataclass(frozen=True)
class _StepSpec:
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


def _step_fn(decoder, spec: _StepSpec):
    """A pure function of arrays (what ``mx.compile`` needs):
    ``(tokens, offset, cache, cross_kv, bias, extra) -> dict``.

    ``tokens`` (N, 1) are the previous choices, written at position ``offset``. ``extra``
    holds the per-run state: ``reorder`` (beam rows), ``seen`` (repetition penalty),
    ``ban`` (n-gram bans from the host), ``done`` and ``key`` (greedy/sampling),
    ``beam_scores``. The result holds the new cache and state and, for greedy/sampling,
    the chosen tokens and their log-probs; for beam search the top candidates per image.
    """

    def step(tokens, offset, cache_state, cross_kv, bias, extra):
        caches = [KVCache(k, v, offset) for k, v in cache_state]
        out = {}
        if spec.reorder:
            for c in caches:
                c.reorder(extra["reorder"])
        result = decoder(
            tokens, cross_kv=cross_kv, caches=caches, offset=offset, return_attention=spec.attention
        )
        if spec.attention:
            result, maps = result
            # (N, H, 1, T) per layer -> mean over layers and heads -> (N, T)
            out["attention"] = mx.mean(mx.stack([m[:, :, -1, :] for m in maps]), axis=(0, 2))
        out["cache"] = [c.state for c in caches]
        logits = result[:, -1, :]

        if spec.repetition_penalty != 1.0:
            seen = extra["seen"][extra["reorder"]] if spec.reorder else extra["seen"]
            seen = mx.logical_or(seen, mx.arange(logits.shape[-1])[None, :] == tokens)
            out["seen"] = seen
            logits = _apply_repetition_penalty(logits, seen, spec.repetition_penalty)
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
            scaled = _filter_top_p(_filter_top_k(logp / spec.temperature, spec.top_k), spec.top_p)
            choice = mx.random.categorical(scaled, key=sub)
        else:
            choice = mx.argmax(logp, axis=-1)
        lp = mx.take_along_axis(logp, choice[:, None], axis=-1)[:, 0]
        done = extra["done"]
        choice = mx.where(done, PAD, choice).astype(mx.int32)
        out["tokens"] = choice
        out["logprob"] = mx.where(done, 0.0, lp)
        out["done"] = mx.logical_or(done, choice == END)
        return out

    return step


_MAX_TRACES = 16


def _get_step(decoder, spec: _StepSpec, compiled: bool):
    if not compiled:
        return _step_fn(decoder, spec)
    # Kept on the decoder so repeated calls reuse the traces; ``inputs=decoder.state`` makes
    # the compiled step read the current weights, so training between calls is seen.
    cache = decoder.__dict__.setdefault("_compiled_steps", {})
    if spec not in cache:
        if len(cache) >= _MAX_TRACES:
            cache.clear()
        cache[spec] = mx.compile(_step_fn(decoder, spec), inputs=decoder.state)
    return cache[spec]


def _spec(cfg: DecodingConfig, reorder: bool = False, candidates: int = 0) -> _StepSpec:
    sampling = cfg.strategy == "sample"
    return _StepSpec(
        strategy=cfg.strategy,
        attention=cfg.return_attention,
        reorder=reorder,
        repetition_penalty=float(cfg.repetition_penalty),
        ngram_bans=cfg.no_repeat_ngram_size > 0,
        temperature=float(cfg.temperature) if sampling else 1.0,
        top_k=cfg.top_k if sampling else 0,
        top_p=float(cfg.top_p) if sampling else 1.0,
        candidates=candidates,
    )


# ---------------------------------------------------------------------------------------
# Strategies


def _check_config(cfg: DecodingConfig, decoder_max: int) -> DecodingConfig:
    if cfg.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    max_length = decoder_max - 1 if cfg.max_length is None else cfg.max_length
    if not 1 <= max_length <= decoder_max:
        raise UserError(f"max_length must be between 1 and {decoder_max} (the decoder's positions)")
    if cfg.min_length < 0 or cfg.min_length > max_length:
        raise UserError("min_length must be between 0 and max_length")
    if cfg.num_beams < 1:
        raise UserError("num_beams must be at least 1")
    if cfg.temperature <= 0:
        raise UserError("temperature must be > 0")
    if not 0 < cfg.top_p <= 1:
        raise UserError("top_p must be in (0, 1]")
    if cfg.top_k < 0 or cfg.no_repeat_ngram_size < 0 or cfg.repetition_penalty <= 0:
        raise UserError("top_k and no_repeat_ngram_size must be >= 0, repetition_penalty > 0")
    n_return = cfg.num_return_sequences
    if n_return is None:
        n_return = cfg.num_beams if cfg.strategy == "beam" else 1
    if n_return < 1:
        raise UserError("num_return_sequences must be at least 1")
    if cfg.strategy == "beam" and n_return > cfg.num_beams:
        raise UserError("num_return_sequences cannot exceed num_beams")
    if cfg.strategy == "greedy" and n_return > 1:
        raise UserError("greedy decoding returns one sequence per image; use beam or sample")
    return dataclasses.replace(cfg, max_length=max_length, num_return_sequences=n_return)


def _repeat_rows(arrays, repeats: int):
    if repeats == 1:
        return arrays
    return [(mx.repeat(k, repeats, axis=0), mx.repeat(v, repeats, axis=0)) for k, v in arrays]


def _decode_rows(decoder, cross_kv, cfg: DecodingConfig, rows: int):
    """Greedy or sampled decoding of ``rows`` independent sequences.

    Returns host arrays: tokens (rows, max_length), logprobs (rows, max_length), lengths,
    finished and attention (rows, max_length, T) or None.
    """
    max_len = cfg.max_length
    vocab = decoder.config.vocab_size
    step = _get_step(decoder, _spec(cfg), cfg.compile)
    bias, no_end_bias = _token_biases(vocab, cfg.ban_unk)
    host_ngrams = cfg.no_repeat_ngram_size > 0

    cache_state = [c.state for c in decoder.make_cache(rows, max_len)]
    extra = {"done": mx.zeros((rows,), dtype=mx.bool_)}
    if cfg.strategy == "sample":
        extra["key"] = mx.random.key(secrets.randbits(63) if cfg.seed is None else cfg.seed)
    if cfg.repetition_penalty != 1.0:
        extra["seen"] = mx.zeros((rows, vocab), dtype=mx.bool_)

    toks = np.full((rows, max_len), PAD, dtype=np.int64)
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

    tokens = mx.full((rows, 1), START, dtype=mx.int32)
    pending = None
    for t in range(max_len):
        if host_ngrams:
            # The bans need step t-1's tokens on the host: no overlap in this mode.
            if pending is not None and collect(t - 1, pending):
                pending = None
                break
            pending = None
            extra["ban"] = mx.array(_ngram_bans(toks, lengths, cfg.no_repeat_ngram_size, vocab))
        out = step(
            tokens,
            mx.array(t, dtype=mx.int32),
            cache_state,
            cross_kv,
            no_end_bias if t < cfg.min_length else bias,
            extra,
        )
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


@dataclass
class _Hypothesis:
    score: float
    logprob: float
    tokens: list[int]
    finished: bool
    attention: np.ndarray | None


def _beam_search(decoder, cross_kv, cfg: DecodingConfig, batch: int) -> list[list[_Hypothesis]]:
    """Beam search; returns per image its hypotheses, best first (at most ``num_beams``)."""
    k_beams, max_len, lp_pow = cfg.num_beams, cfg.max_length, cfg.length_penalty
    vocab = decoder.config.vocab_size
    rows = batch * k_beams
    n_cand = min(2 * k_beams, k_beams * vocab)
    first_step = _get_step(decoder, _spec(cfg, False, n_cand), cfg.compile)
    next_step = _get_step(decoder, _spec(cfg, True, n_cand), cfg.compile)
    bias, no_end_bias = _token_biases(vocab, cfg.ban_unk)
    cache_state = [c.state for c in decoder.make_cache(rows, max_len)]
    extra = {}
    if cfg.repetition_penalty != 1.0:
        extra["seen"] = mx.zeros((rows, vocab), dtype=mx.bool_)

    # Only the first beam of each image is live at the start (the others are copies).
    beam_scores = np.full((batch, k_beams), -np.inf)
    beam_scores[:, 0] = 0.0
    history = np.full((rows, max_len), PAD, dtype=np.int64)
    attn_hist = None
    hyps: list[list[_Hypothesis]] = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)

    def add(b: int, hyp: _Hypothesis) -> None:
        kept = hyps[b]
        if len(kept) < k_beams or hyp.score > kept[-1].score:
            kept.append(hyp)
            kept.sort(key=lambda h: -h.score)
            del kept[k_beams:]

    tokens = mx.full((rows, 1), START, dtype=mx.int32)
    step = first_step
    for t in range(max_len):
        extra["beam_scores"] = mx.array(beam_scores.astype(np.float32))
        if cfg.no_repeat_ngram_size > 0:
            ban = _ngram_bans(history, np.full(rows, t), cfg.no_repeat_ngram_size, vocab)
            extra["ban"] = mx.array(ban)
        out = step(
            tokens,
            mx.array(t, dtype=mx.int32),
            cache_state,
            cross_kv,
            no_end_bias if t < cfg.min_length else bias,
            extra,
        )
        mx.eval(out)
        cache_state = out["cache"]
        if "seen" in out:
            extra["seen"] = out["seen"]
        idx = np.array(out["candidates"])
        vals = np.array(out["scores"]).astype(np.float64)
        if "attention" in out:
            if attn_hist is None:
                attn_hist = np.zeros((rows, max_len, out["attention"].shape[-1]), np.float32)
            attn_hist[:, t] = np.array(out["attention"])

        length = t + 1
        norm = float(length) ** lp_pow
        beam_rows = np.zeros(rows, dtype=np.int64)
        next_tokens = np.full(rows, PAD, dtype=np.int64)
        new_scores = np.full((batch, k_beams), -np.inf)
        for b in range(batch):
            base = b * k_beams
            beam_rows[base : base + k_beams] = base  # dead/filler rows copy the first one
            if done[b]:
                continue
            order = np.argsort(-vals[b], kind="stable")
            n_live = 0
            for rank, j in enumerate(order):
                score = vals[b, j]
                if not np.isfinite(score):
                    break
                beam, tok = divmod(int(idx[b, j]), vocab)
                row = base + beam
                if tok == END:
                    # As in Hugging Face: an <end> ranked below the top num_beams is dropped.
                    if rank < k_beams:
                        tokens_ = history[row, :t].tolist() + [END]
                        att = None if attn_hist is None else attn_hist[row, : t + 1].copy()
                        add(b, _Hypothesis(score / norm, score, tokens_, True, att))
                    continue
                beam_rows[base + n_live] = row
                next_tokens[base + n_live] = tok
                new_scores[b, n_live] = score
                n_live += 1
                if n_live == k_beams:
                    break
            if n_live == 0:
                done[b] = True  # nothing left to extend (tiny vocabularies)
            elif len(hyps[b]) >= k_beams:
                best_running = new_scores[b].max()
                done[b] = cfg.early_stopping or best_running / norm <= hyps[b][-1].score

        history = history[beam_rows]
        history[:, t] = next_tokens
        if attn_hist is not None:
            attn_hist = attn_hist[beam_rows]
        beam_scores = np.where(done[:, None], -np.inf, new_scores)
        if t == max_len - 1 or done.all():
            break
        extra["reorder"] = mx.array(beam_rows.astype(np.int32))
        tokens = mx.array(next_tokens.astype(np.int32))[:, None]
        step = next_step

    # Beams still running at max_length end there, unfinished.
    norm = float(max_len) ** lp_pow
    for b in range(batch):
        if done[b]:
            continue
        for i in range(k_beams):
            score = beam_scores[b, i]
            if np.isfinite(score):
                row = b * k_beams + i
                att = None if attn_hist is None else attn_hist[row, :max_len].copy()
                add(b, _Hypothesis(score / norm, score, history[row].tolist(), False, att))
    return hyps


# ---------------------------------------------------------------------------------------
# Public API


def decode(decoder, image_tokens: mx.array, tokenizer, config: DecodingConfig) -> list[Caption]:
    """Generate captions from image tokens ``(B, T, d)`` already projected to decoder width."""
    cfg = _check_config(config, decoder.config.max_length)
    batch = image_tokens.shape[0]
    if batch == 0:
        return []
    was_training = decoder.training
    decoder.eval()
    try:
        cross_kv = decoder.cross_kv(image_tokens)
        if cfg.strategy == "beam":
            cross_kv = _repeat_rows(cross_kv, cfg.num_beams)
            per_image = _beam_search(decoder, cross_kv, cfg, batch)
        else:
            n = cfg.num_return_sequences
            cross_kv = _repeat_rows(cross_kv, n)
            toks, lps, lengths, finished, attn = _decode_rows(decoder, cross_kv, cfg, batch * n)
            per_image = []
            for b in range(batch):
                hs = []
                for r in range(b * n, (b + 1) * n):
                    logprob = float(lps[r, : lengths[r]].sum())
                    hs.append(
                        _Hypothesis(
                            logprob,
                            logprob,
                            toks[r, : lengths[r]].tolist(),
                            bool(finished[r]),
                            None if attn is None else attn[r, : lengths[r]].copy(),
                        )
                    )
                hs.sort(key=lambda h: -h.score)
                per_image.append(hs)
    finally:
        if was_training:
            decoder.train()

    captions = []
    for hs in per_image:
        hs = hs[: cfg.num_return_sequences]
        made = [
            Caption(
                text=tokenizer.decode(h.tokens),
                token_ids=h.tokens,
                score=float(h.score),
                logprob=float(h.logprob),
                finished=h.finished,
                attention=h.attention,
            )
            for h in hs
        ]
        best = made[0]
        best.alternatives = made[1:]
        captions.append(best)
    return captions


def generate(
    model,
    pixels: mx.array | np.ndarray | None,
    tokenizer,
    strategy: str | None = None,
    *,
    config: DecodingConfig | None = None,
    image_tokens: mx.array | None = None,
    features: mx.array | None = None,
    **options: Any,
) -> list[Caption]:
    """Caption a batch of preprocessed images with a :class:`~mlx_caption.models.captioner.Captioner`.

    Args:
        model: the captioner (``encode_images``, ``project``, ``decoder``).
        pixels: ``(B, H, W, 3)`` preprocessed images, or None when ``image_tokens`` or
            ``features`` is given.
        tokenizer: decodes the ids (``CaptionTokenizer``).
        strategy: ``"greedy"``, ``"beam"`` or ``"sample"`` (overrides ``config.strategy``).
        config: a :class:`DecodingConfig`; ``options`` override its fields.
        image_tokens: projected image tokens ``(B, T, d)`` (skips the encoder).
        features: raw encoder token grid ``(B, T, D_vision)`` (e.g. from a feature cache).

    Returns:
        One :class:`Caption` per image, in order.
    """
    cfg = config or DecodingConfig()
    if strategy is not None:
        options["strategy"] = strategy
    cfg = cfg.replace(**options)
    if image_tokens is None:
        if features is not None:
            image_tokens = model.project(mx.array(features))
        elif pixels is not None:
            was_training = model.training
            model.eval()
            try:
                image_tokens = model.encode_images(mx.array(pixels))
            finally:
                if was_training:
                    model.train()
        else:
            raise ValueError("give pixels, image_tokens or features")
    return decode(model.decoder, image_tokens, tokenizer, cfg)


_LOADED: dict[str, tuple[Any, Any]] = {}


def caption(
    images,
    checkpoint: str | Path | None = None,
    *,
    model=None,
    tokenizer=None,
    batch_size: int = 16,
    **decoding: Any,
) -> list[Caption]:
    """Caption image files or PIL images with a saved captioner.

    Args:
        images: a path, a PIL image, or a list of them.
        checkpoint: captioner folder or Hugging Face hub id (see
            :func:`~mlx_caption.models.captioner.load_captioner`); loaded once and kept.
        model, tokenizer: an already loaded captioner instead of ``checkpoint``.
        batch_size: images per forward pass.
        **decoding: :class:`DecodingConfig` fields (``strategy="beam"``, ``num_beams=3``, ...).

    Returns:
        One :class:`Caption` per image, in order.
    """
    from PIL import Image

    from mlx_caption.data.preprocess import load_image, preprocess_image

    if model is None:
        if checkpoint is None:
            raise UserError("give a checkpoint (folder or hub id) or a model and tokenizer")
        from mlx_caption.models.captioner import load_captioner

        # Keyed by the weights file's mtime too, so a checkpoint saved again is reloaded.
        weights = Path(checkpoint) / "model.safetensors"
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
