"""Logit processors: pure array functions, traced into the compiled decoding step.

Each takes ``(N, vocab)`` logits (one row per sequence being decoded) and returns processed
logits of the same shape; :func:`ngram_bans` runs on the host because it needs each row's
history as Python lists.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlx_caption.tokens import SpecialTokens


def repetition_penalty(logits: mx.array, seen: mx.array, penalty: float) -> mx.array:
    """CTRL's penalty: logits of ``seen`` tokens divided by ``penalty`` if positive, multiplied
    if negative (so ``penalty > 1`` always makes a repeat less likely)."""
    penalised = mx.where(logits > 0, logits / penalty, logits * penalty)
    return mx.where(seen, penalised, logits)


def ngram_bans(history: np.ndarray, lengths: np.ndarray, n: int, vocab: int) -> np.ndarray:
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


def top_k(logits: mx.array, k: int) -> mx.array:
    """Keep the ``k`` largest logits of each row (``k <= 0`` keeps all)."""
    vocab = logits.shape[-1]
    if k <= 0 or k >= vocab:
        return logits
    kth = mx.partition(logits, vocab - k, axis=-1)[:, vocab - k : vocab - k + 1]
    return mx.where(logits < kth, -mx.inf, logits)


def top_p(logits: mx.array, p: float) -> mx.array:
    """Nucleus filtering: keep the most likely tokens whose probabilities reach ``p``."""
    if p >= 1.0:
        return logits
    order = mx.argsort(-logits, axis=-1)
    sorted_logits = mx.take_along_axis(logits, order, axis=-1)
    probs = mx.softmax(sorted_logits, axis=-1, precise=True)
    # Drop a token when the mass before it already reaches p (the top token always stays).
    drop_sorted = (mx.cumsum(probs, axis=-1) - probs) >= p
    drop = mx.take_along_axis(drop_sorted, mx.argsort(order, axis=-1), axis=-1)
    return mx.where(drop, -mx.inf, logits)


def token_biases(vocab: int, special: SpecialTokens, ban_unk: bool) -> tuple[mx.array, mx.array]:
    """Additive logit biases: the model's suppressed tokens (and its unknown token with
    ``ban_unk``), and the same plus the end token (used while a caption is shorter than
    ``min_length``)."""
    banned = np.zeros(vocab, dtype=bool)
    banned[list(special.suppressed)] = True
    if ban_unk and special.unk is not None and special.unk < vocab:
        banned[special.unk] = True
    base = np.where(banned, -np.inf, 0.0).astype(np.float32)
    banned[special.end] = True
    no_end = np.where(banned, -np.inf, 0.0).astype(np.float32)
    return mx.array(base), mx.array(no_end)
