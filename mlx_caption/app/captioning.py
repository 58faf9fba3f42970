"""What the page asks of the library: load a captioner, caption one image, plain results.

Kept free of Streamlit so it is unit-tested directly; the page only adds caching and layout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlx_caption.app import heatmap
from mlx_caption.app.describe import ModelCard, describe_model
from mlx_caption.models.captioner import CaptionerConfig

STRATEGY_LABELS = {"greedy": "Greedy", "beam": "Beam search", "sample": "Sampling"}


@dataclass(frozen=True)
class Decoding:
    """The page's decoding choices (hashable: part of the result cache key)."""

    strategy: str = "greedy"
    max_length: int | None = None  # None: the decoder's default_max_length
    num_beams: int = 3
    temperature: float = 1.0
    top_p: float = 0.9
    samples: int = 3
    seed: int = 0

    def options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`mlx_caption.generate.generate` (only those that apply,
        so greedy here is exactly ``caption(..., strategy="greedy", max_length=...)``)."""
        opts: dict[str, Any] = {"strategy": self.strategy, "max_length": self.max_length}
        if self.strategy == "beam":
            opts["num_beams"] = self.num_beams
        elif self.strategy == "sample":
            opts.update(
                temperature=self.temperature,
                top_p=self.top_p,
                num_return_sequences=self.samples,
                seed=self.seed,
            )
        return opts


@dataclass
class LoadedModel:
    """A captioner ready to use, and what the page shows about it."""

    model: Any
    tokenizer: Any
    path: str
    grid: tuple[int, int]
    max_length: int  # the length slider's top: one more than the model's default caption length
    parameters: int
    load_seconds: float
    card: ModelCard | None = None  # what the page says about it
    # Streamlit serves each browser session from its own thread and the model is shared:
    # one caption at a time (MLX graphs are not meant to be evaluated concurrently, and on a
    # CPU the BLAS already uses every core).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class CaptionResult:
    """One image's caption, the other candidates, and a heat map per word."""

    text: str
    score: float
    logprob: float
    finished: bool
    alternatives: list[tuple[str, float, float]] = field(default_factory=list)
    words: list[tuple[str, np.ndarray]] = field(default_factory=list)
    seconds: float = 0.0


def load_model(path: str | Path) -> LoadedModel:
    """Load a captioner (zoo name, folder or hub id); :class:`UserError` says what is wrong."""
    from mlx_caption.loading import load_captioner

    start = time.perf_counter()
    model, tokenizer = load_captioner(path)
    seconds = time.perf_counter() - start
    vision = model.config.vision
    side = vision.input_size // vision.patch_size
    try:
        n_params = int(model.num_parameters())
    except Exception:  # noqa: BLE001  (only shown on the page)
        n_params = 0
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=str(path),
        grid=(side, side),
        max_length=int(model.decoder.default_max_length) + 1,
        parameters=n_params,
        load_seconds=seconds,
        card=(
            describe_model(path if Path(path).is_dir() else None, model.config)
            if isinstance(model.config, CaptionerConfig)
            else None  # another family's captioner: the page shows its size only
        ),
    )


def caption_image(
    loaded: LoadedModel, image: Image.Image, decoding: Decoding, attention: bool = True
) -> CaptionResult:
    """Caption one RGB image; with ``attention`` also the cross-attention map of each word."""
    from mlx_caption.data.preprocess import preprocess_image
    from mlx_caption.generate import generate

    pixels = preprocess_image(image, loaded.model.config.vision.preprocess)[None]
    with loaded.lock:
        start = time.perf_counter()
        best = generate(
            loaded.model, pixels, loaded.tokenizer, return_attention=attention, **decoding.options()
        )[0]
        seconds = time.perf_counter() - start
    words: list[tuple[str, np.ndarray]] = []
    if attention and best.attention is not None:
        end = loaded.model.decoder.special_tokens.end
        ids = [t for t in best.token_ids if t != end]
        words = heatmap.word_maps(
            ids, best.attention[: len(ids)], loaded.tokenizer.decode, loaded.grid
        )
    return CaptionResult(
        text=best.text,
        score=best.score,
        logprob=best.logprob,
        finished=best.finished,
        alternatives=[(a.text, a.score, a.logprob) for a in best.alternatives],
        words=words,
        seconds=seconds,
    )
