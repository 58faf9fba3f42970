"""Validation during training: teacher-forced loss and metrics of greedy captions."""

from __future__ import annotations

from collections.abc import Iterable

import mlx.core as mx
import mlx.nn as nn

from mlx_caption.data.synthetic import score_objects
from mlx_caption.generate import DecodingConfig, decode
from mlx_caption.metrics import score_captions
from mlx_caption.models.base import eval_mode
from mlx_caption.train.step import caption_loss, image_tokens, shifted


def evaluate_captioner(
    model: nn.Module,
    tokenizer,
    batches: Iterable[dict],
    *,
    from_features: bool,
    max_length: int,
    label_smoothing: float = 0.0,
    generate_captions: bool = True,
    generation_length: int | None = None,
    metrics_tokenizer: str = "auto",
    metrics: list[str] | None = None,
    scenes: dict | None = None,
    examples: int = 3,
) -> dict:
    """Validation loss (teacher forcing over every reference) and greedy-caption metrics.

    ``batches`` yield ``{"images": pixels or features (B, ...), "ids": [...], "references":
    [[str, ...], ...]}``. Returns ``val_loss`` (label-smoothed, comparable with the training
    loss), ``val_nll`` (plain cross-entropy), ``val_accuracy``, the caption metrics of
    ``metrics.score_captions`` and, for synthetic data (``scenes``), ``score_objects``.
    """
    sums = {"loss": 0.0, "nll": 0.0, "correct": 0.0, "count": 0.0}
    refs: dict = {}
    preds: dict = {}
    greedy = DecodingConfig(strategy="greedy", max_length=generation_length)
    with eval_mode(model):
        for batch in batches:
            grid = image_tokens(model, mx.array(batch["images"]), from_features)
            rows = [(i, r) for i, rs in enumerate(batch["references"]) for r in rs]
            tokens = mx.array(tokenizer.encode_batch([r for _, r in rows], max_length))
            which = mx.array([i for i, _ in rows])
            inputs, targets = shifted(tokens)
            logits = model(grid[which], inputs)
            loss, count, correct = caption_loss(logits, targets, label_smoothing)
            nll, _, _ = caption_loss(logits, targets, 0.0)
            mx.eval(loss, count, correct, nll)
            sums["loss"] += loss.item()
            sums["nll"] += nll.item()
            sums["correct"] += correct.item()
            sums["count"] += count.item()
            for key, rs in zip(batch["ids"], batch["references"], strict=True):
                refs[key] = list(rs)
            if generate_captions:
                caps = decode(model.decoder, grid, tokenizer, greedy)
                for key, cap in zip(batch["ids"], caps, strict=True):
                    preds[key] = cap.text
    n = max(sums["count"], 1.0)
    out: dict = {
        "val_loss": sums["loss"] / n,
        "val_nll": sums["nll"] / n,
        "val_accuracy": sums["correct"] / n,
        "val_images": len(refs),
    }
    if generate_captions and preds:
        scores = score_captions(refs, preds, tokenizer=metrics_tokenizer, metrics=metrics)
        out.update({k: v for k, v in scores.items() if isinstance(v, (int, float))})
        if scenes:
            found = {k: preds[k] for k in preds if str(k) in scenes}
            if found:
                out.update(score_objects(found, scenes))
        out["examples"] = [
            {"id": k, "caption": preds[k], "reference": refs[k][0]} for k in list(preds)[:examples]
        ]
    return out
