"""What a data set's images look like: their background, its noise, their size, object sizes.

A captioner trained here records this in its config (``CaptionerConfig.image_look``), so the
web page can draw in the model's world: a sketch becomes shapes on the background the model
saw in training, not on a white sheet it never saw (the demo model reads a white canvas as
"large white shapes").

The background is measured from pixels, so it holds for any data set (drawings scanned on
white paper give white): per image, the median colour (shapes and objects are the minority of
pixels) and the pixel noise on the background, read from each pixel's difference to the mean
of its four neighbours (a smooth gradient cancels out; for independent noise of deviation s
that difference has deviation s * sqrt(5/4)). Object sizes cannot be read from unlabelled
pixels; the synthetic generator knows them and passes them in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# A pixel belongs to the background when every channel is this close to the image's median
# colour: wide enough for the synthetic set's gradient and noise, far below the distance of any
# of its shape colours.
BACKGROUND_TOLERANCE = 48


@dataclass(frozen=True)
class ImageLook:
    """The training images' look: mean background colour (RGB, 0-255), the standard deviation
    of the pixel noise on it (0-255 units, at ``size``), the images' side in pixels, and named
    object sizes as diameters in fractions of the image side (e.g. ``("small", 0.18)``)."""

    background: tuple[int, int, int] = (255, 255, 255)
    noise: float = 0.0
    size: int | None = None
    object_sizes: tuple[tuple[str, float], ...] = ()
    images: int = 0  # how many images it was measured on

    def to_dict(self) -> dict[str, Any]:
        return {
            "background": list(self.background),
            "noise": self.noise,
            "size": self.size,
            "object_sizes": dict(self.object_sizes),
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageLook:
        background = tuple(int(c) for c in data.get("background", (255, 255, 255)))
        if len(background) != 3 or not all(0 <= c <= 255 for c in background):
            raise ValueError(f"image_look.background must be 3 values in 0..255, got {background}")
        size = data.get("size")
        return cls(
            background=background,
            noise=float(data.get("noise", 0.0)),
            size=None if size is None else int(size),
            object_sizes=tuple((str(k), float(v)) for k, v in data.get("object_sizes", {}).items()),
            images=int(data.get("images", 0)),
        )


WHITE = ImageLook()  # what the page assumes for a model that says nothing about its images


def background_of(image: Image.Image) -> tuple[np.ndarray, float | None]:
    """One image's median colour (RGB floats) and the noise deviation on its background
    (None when too few pixels are background to tell)."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32)
    colour = np.median(x.reshape(-1, 3), axis=0)
    near = np.all(np.abs(x - colour) <= BACKGROUND_TOLERANCE, axis=-1)
    # The centre pixel and its four neighbours must all be background.
    inner = near[1:-1, 1:-1] & near[:-2, 1:-1] & near[2:, 1:-1] & near[1:-1, :-2] & near[1:-1, 2:]
    if inner.sum() < 16:
        return colour, None
    neighbours = (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]) / 4
    residual = (x[1:-1, 1:-1] - neighbours)[inner]
    return colour, float(residual.std() / math.sqrt(1.25))


def measure_look(
    images: Iterable[Image.Image], object_sizes: Mapping[str, float] | None = None
) -> ImageLook:
    """The look of ``images`` (a sample of a training set): the mean of their median colours,
    the median of their background noise, the median of their shorter sides."""
    colours, noises, sides = [], [], []
    for image in images:
        colour, noise = background_of(image)
        colours.append(colour)
        sides.append(min(image.size))
        if noise is not None:
            noises.append(noise)
    if not colours:
        raise ValueError("no images to measure")
    mean = np.mean(colours, axis=0)
    return ImageLook(
        background=tuple(int(round(float(c))) for c in mean),
        noise=round(float(np.median(noises)), 2) if noises else 0.0,
        size=int(np.median(sides)),
        object_sizes=tuple((k, round(float(v), 4)) for k, v in (object_sizes or {}).items()),
        images=len(colours),
    )
