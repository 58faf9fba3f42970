"""Caption a data split with a trained captioner, score it, and show it.

``evaluate`` is what ``mlx-caption eval`` and the demo run: batched generation over the
split (exact CLIP preprocessing, ordered), predictions in COCO results format, the standard
metrics, and an HTML gallery with each word's cross-attention heat map over the image.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from mlx_caption.data.sources import Record
from mlx_caption.generate import Caption, DecodingConfig, generate

PREDICTIONS_FILE = "predictions.json"
METRICS_FILE = "metrics.json"
GALLERY_FILE = "gallery.html"


def caption_records(
    model,
    tokenizer,
    records: Sequence[Record],
    decoding: DecodingConfig,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[list[Record], list[Caption]]:
    """Caption every usable record, in order. Unreadable images are dropped (and not returned)."""
    from mlx_caption.data.pipeline import eval_stream

    stream = eval_stream(records, model.config.vision.preprocess, batch_size)
    kept: list[Record] = []
    captions: list[Caption] = []
    with tqdm(total=len(stream.usable), desc="captioning", unit="img", disable=not progress) as bar:
        for batch in stream:
            captions += generate(model, batch["pixels"], tokenizer, config=decoding)
            kept += [records[int(i)] for i in batch["index"]]
            bar.update(len(batch["index"]))
    return kept, captions


def coco_predictions(
    records: Sequence[Record], captions: Sequence[Caption]
) -> list[dict[str, Any]]:
    """COCO results format: ``[{"image_id", "caption"}]``."""
    return [{"image_id": r.id, "caption": c.text} for r, c in zip(records, captions, strict=True)]


def score_split(
    records: Sequence[Record],
    captions: Sequence[Caption],
    tokenizer: str = "auto",
    metric_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Corpus metrics against all references, plus the leave-one-out view the demo reports.

    ``leave_one_out`` scores each caption against the same four-reference sets used by
    ``reference_agreement`` (reference k against the other four), so the two are comparable:
    the agreement is what a perfect captioner would reach.
    """
    from mlx_caption.metrics import leave_one_out_scores, reference_agreement, score_captions

    refs = {r.id: list(r.captions) for r in records}
    preds = {r.id: c.text for r, c in zip(records, captions, strict=True)}
    opts = {"tokenizer": tokenizer, "metrics": metric_names}
    result: dict[str, Any] = {
        "images": len(records),
        "all_references": score_captions(refs, preds, **opts),
    }
    if min((len(v) for v in refs.values()), default=0) >= 2:
        result["leave_one_out"] = leave_one_out_scores(refs, preds, **opts)
        result["reference_agreement"] = reference_agreement(refs, **opts)
    return result


def _png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_gallery(
    path: str | Path,
    records: Sequence[Record],
    captions: Sequence[Caption],
    tokenizer,
    preprocess_cfg,
    title: str = "mlx-caption gallery",
    thumb: int = 160,
    word_thumb: int = 72,
) -> Path:
    """A self-contained HTML page: image, generated caption, references, per-word heat maps.

    Images are embedded as PNG data URIs so the page can be moved or mailed as one file.
    Captions generated without attention maps get no heat-map row.
    """
    from mlx_caption.app.heatmap import model_view, overlay, word_maps

    cards = []
    for record, cap in zip(records, captions, strict=True):
        view = model_view(Image.open(record.image).convert("RGB"), preprocess_cfg)
        main = view.resize((thumb, thumb), Image.Resampling.BICUBIC)
        words_html = ""
        if cap.attention is not None and cap.token_ids:
            figures = []
            for word, grid in word_maps(cap.token_ids, cap.attention, tokenizer.decode):
                small = view.resize((word_thumb, word_thumb), Image.Resampling.BICUBIC)
                figures.append(
                    f'<figure><img src="{_png_data_uri(overlay(small, grid))}" alt="">'
                    f"<figcaption>{html.escape(word)}</figcaption></figure>"
                )
            words_html = f'<div class="words">{"".join(figures)}</div>'
        refs = "".join(f"<li>{html.escape(c)}</li>" for c in record.captions)
        cards.append(
            f'<div class="card"><img class="main" src="{_png_data_uri(main)}" alt="">'
            f'<div class="text"><p class="id">{html.escape(str(record.id))}</p>'
            f'<p class="pred">{html.escape(cap.text)} <span class="score">({cap.score:.2f})</span></p>'
            f"{words_html}<details><summary>references</summary><ul>{refs}</ul></details></div></div>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; }}
.card {{ display: flex; gap: 1em; background: white; padding: 1em; margin-bottom: 1em;
         border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
.main {{ width: {thumb}px; height: {thumb}px; image-rendering: pixelated; }}
.pred {{ font-size: 1.15em; font-weight: 600; margin: 0.2em 0; }}
.score, .id {{ color: #888; font-weight: normal; font-size: 0.85em; }}
.words {{ display: flex; flex-wrap: wrap; gap: 4px; }}
figure {{ margin: 0; text-align: center; font-size: 0.8em; }}
figure img {{ width: {word_thumb}px; height: {word_thumb}px; }}
</style></head><body><h1>{html.escape(title)}</h1>
{"".join(cards)}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


@dataclass
class EvalResult:
    """What :func:`evaluate` found: the metrics (as written to ``metrics.json``) and the captions."""

    metrics: dict[str, Any]
    records: list[Record]
    captions: list[Caption]


def evaluate(
    model,
    tokenizer,
    records: Sequence[Record],
    out_dir: str | Path | None,
    decoding: DecodingConfig | None = None,
    batch_size: int = 32,
    gallery_images: int = 48,
    metrics_tokenizer: str = "auto",
    metric_names: Sequence[str] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Caption ``records``, score them, and (with ``out_dir``) write predictions, metrics, gallery."""
    decoding = decoding or DecodingConfig()
    start = time.perf_counter()
    kept, captions = caption_records(model, tokenizer, records, decoding, batch_size, progress)
    seconds = time.perf_counter() - start
    if not kept:
        from mlx_caption.errors import UserError

        raise UserError("no usable images in this split")
    result = score_split(kept, captions, tokenizer=metrics_tokenizer, metric_names=metric_names)
    result["dropped_images"] = len(records) - len(kept)
    result["captions_per_s"] = round(len(kept) / seconds, 2) if seconds > 0 else None
    result["decoding"] = {
        k: v for k, v in vars(decoding).items() if k in ("strategy", "num_beams", "max_length")
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / PREDICTIONS_FILE).write_text(json.dumps(coco_predictions(kept, captions), indent=1))
        (out / METRICS_FILE).write_text(json.dumps(result, indent=2))
        if gallery_images > 0:
            n = min(gallery_images, len(kept))
            with_maps = generate_with_attention(model, tokenizer, kept[:n], decoding, batch_size)
            write_gallery(
                out / GALLERY_FILE, kept[:n], with_maps, tokenizer, model.config.vision.preprocess
            )
    return EvalResult(result, kept, captions)


def generate_with_attention(
    model, tokenizer, records: Sequence[Record], decoding: DecodingConfig, batch_size: int = 32
) -> list[Caption]:
    """Re-caption a few records with cross-attention maps (kept off the bulk pass: it costs)."""
    _, caps = caption_records(
        model,
        tokenizer,
        records,
        decoding.replace(return_attention=True),
        batch_size,
        progress=False,
    )
    return caps
