"""Leave-one-out views: the human ceiling, and a model measured on the same reference sets.

:func:`reference_agreement` scores reference k of every image against that image's other
references; :func:`leave_one_out_scores` scores the prediction against the same sets. Both
average over k, so a model's number and the ceiling are measured on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mlx_caption.metrics.ids import ImageId, check_same_images
from mlx_caption.metrics.names import select_metrics
from mlx_caption.metrics.scoring import check_refs, score_tokenized, tokenize_captions


def _fold_average(
    tok_refs: dict[Any, list[str]],
    hypothesis: Callable[[Any, int], str],
    keys: list[str],
    kind: str,
) -> dict[str, Any]:
    """Average over folds k of the scores of hypothesis(id, k) against refs without ref k."""
    folds = min(len(caps) for caps in tok_refs.values())
    per_fold = []
    for k in range(folds):
        gts = {i: caps[:k] + caps[k + 1 :] for i, caps in tok_refs.items()}
        res = {i: [hypothesis(i, k)] for i in tok_refs}
        per_fold.append(score_tokenized(gts, res, keys, kind == "java")[0])
    out: dict[str, Any] = {}
    for key in keys:
        values = [f[key] for f in per_fold]
        out[key] = None if any(v is None for v in values) else sum(values) / folds
    out.update(
        tokenizer=f"ptb-{kind}",
        meteor_available=kind == "java" and ("METEOR" not in keys or out["METEOR"] is not None),
        images=len(tok_refs),
        folds=folds,
        per_fold=per_fold,
    )
    return out


def reference_agreement(
    refs: Mapping[ImageId, Sequence[str]],
    tokenizer: str = "auto",
    metrics: Iterable[str] | None = None,
) -> dict[str, Any]:
    """How well the references agree with each other: the ceiling for a captioner.

    For k = 1..K (K = the smallest number of references of any image, 5 for Flickr/COCO),
    reference k of every image is scored as the prediction against that image's other
    references; the result is the average over k of each corpus metric. Same keys as
    :func:`~mlx_caption.metrics.score_captions`, plus ``"folds"`` (K) and ``"per_fold"``.
    """
    keys = select_metrics(metrics)
    check_refs(refs, min_refs=2)
    tok_refs, _, kind = tokenize_captions(refs, None, tokenizer)
    return _fold_average(tok_refs, lambda i, k: tok_refs[i][k], keys, kind)


def leave_one_out_scores(
    refs: Mapping[ImageId, Sequence[str]],
    preds: Mapping[ImageId, str],
    tokenizer: str = "auto",
    metrics: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The prediction scored against the same reference sets as :func:`reference_agreement`.

    For each k the prediction is scored against the references other than k (the four that
    reference k was scored against), and the scores are averaged over k: directly
    comparable with the agreement, unlike :func:`~mlx_caption.metrics.score_captions` (which
    uses all references and so gives higher numbers).
    """
    keys = select_metrics(metrics)
    check_refs(refs, min_refs=2)
    check_same_images(refs, preds)
    tok_refs, tok_preds, kind = tokenize_captions(refs, preds, tokenizer)
    return _fold_average(tok_refs, lambda i, k: tok_preds[i], keys, kind)
