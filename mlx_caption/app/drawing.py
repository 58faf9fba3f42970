"""The Draw tab in the model's world: the canvas's background, size and brushes, and the image
a drawing becomes.

A model trained here records what its training images look like (``CaptionerConfig.
image_look``); other models get white. The canvas is a whole multiple of the training images'
side, its background is their mean colour with their pixel noise drawn at their resolution
(so the canvas shows the noise the model knows, enlarged), and a drawing is composited onto it
and box-filtered down to the training images' side, which is how the synthetic generator
smooths its shapes' edges. The brush presets are the training objects' diameters on the
canvas: one dab of the "large" brush is a large round shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mlx_caption.data.look import WHITE, ImageLook

CANVAS = 256  # the canvas's side in screen pixels, before rounding to a multiple of the images'
SHAPE_STROKE = 2  # outline width of the rectangle and circle tools: their size is dragged
NOISE_SEED = 0  # one fixed background: the same drawing is the same image (and cache key)


@dataclass(frozen=True)
class Board:
    """The canvas for one model: ``canvas`` pixels on a side, handed to the model at ``side``."""

    look: ImageLook
    canvas: int
    side: int

    @property
    def brushes(self) -> dict[str, int]:
        """Brush widths in canvas pixels, by the name of the object size they draw."""
        return {name: max(1, round(d * self.canvas)) for name, d in self.look.object_sizes}

    def describe(self) -> str:
        """What the page says under the canvas."""
        look = self.look
        if look.images == 0:
            return "This model does not say what its training images look like: you draw on white."
        colour = ", ".join(map(str, look.background))
        text = (
            f"The canvas is the model's world: the background of its training images (RGB "
            f"{colour}, noise {look.noise:.1f}). The model sees your drawing at {self.side} x "
            f"{self.side} pixels."
        )
        if self.brushes:
            sizes = ", ".join(f"{name} ones {width} px" for name, width in self.brushes.items())
            text += f" Its shapes here: {sizes} across."
        return text


def board_for(look: ImageLook | None) -> Board:
    """The canvas for a model whose training images look like ``look`` (None: white)."""
    look = look or WHITE
    if look.size and look.size <= CANVAS:
        side = look.size
        return Board(look, side * max(1, round(CANVAS / side)), side)
    return Board(look, CANVAS, CANVAS)


def background(board: Board) -> Image.Image:
    """The canvas's background: the look's colour and noise at the model's side, enlarged
    (nearest neighbour) to the canvas."""
    rng = np.random.default_rng(NOISE_SEED)
    colour = np.array(board.look.background, dtype=np.float32)
    noise = rng.standard_normal((board.side, board.side, 3), dtype=np.float32) * board.look.noise
    pixels = np.clip(colour + noise + 0.5, 0, 255).astype(np.uint8)
    small = Image.fromarray(pixels, "RGB")
    return small.resize((board.canvas, board.canvas), Image.Resampling.NEAREST)


def drawing_image(strokes: np.ndarray, board: Board) -> Image.Image:
    """The image handed to the model: the canvas's RGBA ``strokes`` over the background,
    box-filtered to the model's side."""
    rgba = Image.fromarray(np.asarray(strokes, dtype=np.uint8), "RGBA")
    if rgba.size != (board.canvas, board.canvas):  # a browser that renders at another scale
        rgba = rgba.resize((board.canvas, board.canvas), Image.Resampling.BOX)
    picture = background(board).convert("RGBA")
    picture.alpha_composite(rgba)
    picture = picture.convert("RGB")
    if board.side != board.canvas:
        picture = picture.resize((board.side, board.side), Image.Resampling.BOX)
    return picture
