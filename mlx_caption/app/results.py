"""Every caption the page shows, as files to take away (JSON and CSV).

The JSON holds one entry per image with its caption, scores and the other beams (or
samples); the CSV one row per candidate, rank 1 being the caption the page shows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

from mlx_caption.app.captioning import CaptionResult, Decoding

CSV_COLUMNS = ("image", "rank", "caption", "score", "log_prob", "finished")


@dataclass(frozen=True)
class ShownCaption:
    """One image's caption as the page shows it."""

    image: str
    result: CaptionResult


def captions_record(shown: list[ShownCaption], model: str, decoding: Decoding) -> dict[str, Any]:
    """The JSON document: the model, the decoding settings and every image's captions."""
    return {
        "model": model,
        "decoding": asdict(decoding),
        "captions": [
            {
                "image": item.image,
                "caption": item.result.text,
                "score": item.result.score,
                "log_prob": item.result.logprob,
                "finished": item.result.finished,
                "others": [
                    {"caption": text, "score": score, "log_prob": logprob}
                    for text, score, logprob in item.result.alternatives
                ],
            }
            for item in shown
        ],
    }


def captions_json(shown: list[ShownCaption], model: str, decoding: Decoding) -> str:
    """:func:`captions_record` as indented JSON."""
    return json.dumps(captions_record(shown, model, decoding), indent=2) + "\n"


def captions_csv(shown: list[ShownCaption]) -> str:
    """One row per candidate caption: ``CSV_COLUMNS``, rank 1 first for each image."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in shown:
        r = item.result
        writer.writerow([item.image, 1, r.text, r.score, r.logprob, r.finished])
        for rank, (text, score, logprob) in enumerate(r.alternatives, start=2):
            writer.writerow([item.image, rank, text, score, logprob, ""])
    return out.getvalue()
