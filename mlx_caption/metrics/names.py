"""Metric names: pycocoevalcap's result keys and the names a caller may ask for them by."""

from __future__ import annotations

from collections.abc import Iterable

from mlx_caption.errors import UserError

#: Metric groups in pycocoevalcap's order, with the result keys each produces.
METRICS: dict[str, tuple[str, ...]] = {
    "Bleu": ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"),
    "METEOR": ("METEOR",),
    "ROUGE_L": ("ROUGE_L",),
    "CIDEr": ("CIDEr",),
}
METRIC_KEYS: tuple[str, ...] = tuple(k for keys in METRICS.values() for k in keys)

# Any case of a key or a group, plus the spellings papers use.
_ALIASES: dict[str, tuple[str, ...]] = {
    **{k.lower(): (k,) for k in METRIC_KEYS},
    **{group.lower(): keys for group, keys in METRICS.items()},
    "rouge": ("ROUGE_L",),
    "cider-d": ("CIDEr",),
    "cider_d": ("CIDEr",),
}


def select_metrics(metrics: Iterable[str] | str | None) -> list[str]:
    """Result keys to report, in pycocoevalcap's order, from names like "bleu" or "CIDEr".

    ``None`` means all of them; an unknown name is a :class:`UserError`.
    """
    if metrics is None:
        return list(METRIC_KEYS)
    if isinstance(metrics, str):
        metrics = [metrics]
    wanted: set[str] = set()
    for name in metrics:
        keys = _ALIASES.get(str(name).lower())
        if keys is None:
            raise UserError(f"unknown metric {name!r}: choose from {', '.join(METRICS)}")
        wanted.update(keys)
    return [k for k in METRIC_KEYS if k in wanted]
