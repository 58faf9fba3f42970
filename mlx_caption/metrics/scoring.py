"""Scoring one predicted caption per image: tokenize as pycocoevalcap does, then its scorers.

The numbers are pycocoevalcap's, key for key; what this adds is the tokenizer choice (Java
when it is there, the pure-Python copy otherwise) and checks that fail with a clear message
before anything is scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlx_caption.errors import UserError
from mlx_caption.metrics.ids import ImageId, check_same_images
from mlx_caption.metrics.java import java_available
from mlx_caption.metrics.meteor import close_meteor, shared_meteor
from mlx_caption.metrics.names import METRICS, select_metrics
from mlx_caption.metrics.ptb_java import tokenize_java
from mlx_caption.metrics.ptb_python import tokenize_python


def resolve_tokenizer(tokenizer: str) -> str:
    """The tokenizer that will run, "java" or "python", for a ``tokenizer`` argument."""
    if tokenizer not in ("auto", "java", "python"):
        raise UserError(f"unknown tokenizer {tokenizer!r}: use auto, java or python")
    if tokenizer == "auto":
        return "java" if java_available() else "python"
    if tokenizer == "java" and not java_available():
        raise UserError(
            "tokenizer 'java' needs a working `java` on PATH (Java 8+) and pycocoevalcap's jars; "
            "use --tokenizer python (METEOR is then unavailable)"
        )
    return tokenizer


def check_refs(refs: Mapping[Any, Sequence[str]], min_refs: int = 1) -> None:
    """Refuse (UserError) no images, non-string captions, or fewer than ``min_refs`` each."""
    if not refs:
        raise UserError("no images to score")
    for key, caps in refs.items():
        if isinstance(caps, str) or not all(isinstance(c, str) for c in caps):
            raise UserError(f"references of image {key!r} must be a list of strings")
        if len(caps) < min_refs:
            raise UserError(
                f"image {key!r} has {len(caps)} reference(s); this needs at least {min_refs}"
            )


def tokenize_captions(
    refs: Mapping[Any, Sequence[str]], preds: Mapping[Any, str] | None, tokenizer: str
) -> tuple[dict[Any, list[str]], dict[Any, str], str]:
    """Tokenize every reference and prediction in one pass (one JVM start for Java).

    Returns the tokenized references and predictions and the tokenizer that ran: with
    "auto", a Java failure falls back to the Python tokenizer (with a warning) rather than
    ending, say, a training run's evaluation.
    """
    kind = resolve_tokenizer(tokenizer)
    keys = list(refs)
    flat = [c for k in keys for c in refs[k]]
    if preds is not None:
        flat += [preds[k] for k in keys]
    if kind == "java":
        try:
            tokens = tokenize_java(flat)
        except (OSError, RuntimeError, UnicodeDecodeError) as err:
            if tokenizer == "java":
                raise
            warnings.warn(f"Java PTBTokenizer failed, using the Python one: {err}", stacklevel=3)
            kind = "python"
    if kind == "python":
        tokens = tokenize_python(flat)
    tok_refs: dict[Any, list[str]] = {}
    i = 0
    for k in keys:
        tok_refs[k] = tokens[i : i + len(refs[k])]
        i += len(refs[k])
    tok_preds = dict(zip(keys, tokens[i:], strict=True)) if preds is not None else {}
    return tok_refs, tok_preds, kind


def score_tokenized(
    gts: dict[Any, list[str]], res: dict[Any, list[str]], keys: list[str], java: bool
) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Corpus and per-image scores of the wanted keys with pycocoevalcap's scorers.

    METEOR runs only with ``java``; where it cannot run, or fails, its corpus score is None.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    corpus: dict[str, float | None] = {}
    per_image: dict[str, list[float]] = {}
    if any(k.startswith("Bleu") for k in keys):
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n, name in enumerate(METRICS["Bleu"]):
            if name in keys:
                corpus[name], per_image[name] = float(score[n]), [float(s) for s in scores[n]]
    if "METEOR" in keys:
        corpus["METEOR"] = None
        if java:
            try:
                score, scores = shared_meteor().compute_score(gts, res)
                corpus["METEOR"], per_image["METEOR"] = score, scores
            except (OSError, RuntimeError, ValueError) as err:
                # A dead or confused JVM (out of memory, say) costs METEOR, not the run.
                close_meteor()
                warnings.warn(f"METEOR failed and is left out: {err}", stacklevel=3)
    if "ROUGE_L" in keys:
        score, scores = Rouge().compute_score(gts, res)
        corpus["ROUGE_L"], per_image["ROUGE_L"] = float(score), [float(s) for s in scores]
    if "CIDEr" in keys:
        score, scores = Cider().compute_score(gts, res)
        corpus["CIDEr"], per_image["CIDEr"] = float(score), [float(s) for s in scores]
    return {k: corpus[k] for k in keys}, per_image


def score_captions(
    refs: Mapping[ImageId, Sequence[str]],
    preds: Mapping[ImageId, str],
    tokenizer: str = "auto",
    metrics: Iterable[str] | None = None,
    per_image: bool = False,
) -> dict[str, Any]:
    """Score one predicted caption per image against its references (pycocoevalcap numbers).

    Args:
        refs: image id -> reference captions.
        preds: image id -> predicted caption; must cover exactly the images of ``refs``.
        tokenizer: "java" (CoreNLP, as pycocoevalcap), "python" (the Java-free copy; no
            METEOR) or "auto" (Java when it is there).
        metrics: names to compute ("Bleu", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", any case);
            all by default.
        per_image: also return ``"per_image": {metric: {image id: score}}``.

    Returns:
        ``{"Bleu_1": .., "Bleu_2": .., "Bleu_3": .., "Bleu_4": .., "METEOR": .. or None,
        "ROUGE_L": .., "CIDEr": .., "tokenizer": "ptb-java" | "ptb-python",
        "meteor_available": bool, "images": n}``.
    """
    keys = select_metrics(metrics)
    check_refs(refs)
    check_same_images(refs, preds)
    for k, p in preds.items():
        if not isinstance(p, str):
            raise UserError(f"prediction for image {k!r} must be a string, not {type(p).__name__}")
    gts, tok_preds, kind = tokenize_captions(refs, preds, tokenizer)
    res = {k: [tok_preds[k]] for k in gts}
    corpus, scores = score_tokenized(gts, res, keys, kind == "java")
    out: dict[str, Any] = dict(corpus)
    meteor_ok = kind == "java" and ("METEOR" not in keys or corpus["METEOR"] is not None)
    out.update(tokenizer=f"ptb-{kind}", meteor_available=meteor_ok, images=len(gts))
    if per_image:
        ids = list(gts)
        out["per_image"] = {m: dict(zip(ids, v, strict=True)) for m, v in scores.items()}
    return out
