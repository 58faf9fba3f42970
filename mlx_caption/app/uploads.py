"""Validate an uploaded file and turn it into an RGB image, or say why not.

Everything here is a pure function of the bytes and the limits, so the web page can show
one clear message for a bad upload (``st.error``) and keep serving, and the rules are
unit-tested without a browser. The defences, in the order they run:

* a byte-size limit, checked before anything is parsed;
* only the decoders of JPEG, PNG, WebP and GIF are tried (``Image.open(formats=...)``), so
  an upload never reaches Pillow's less-travelled parsers;
* a pixel-count limit checked on the header, *before* the pixels are decoded, so a
  decompression bomb (a small file that declares a huge canvas) costs nothing;
  Pillow's own ``DecompressionBombError`` is caught as well;
* truncated or corrupt data fails in ``load()`` and becomes a message, never a traceback.

Animated images (GIF, WebP) are captioned from their first frame, and 16-bit images are
brought down to 8 bits; both come back with a note the page shows as a warning.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError

# The library's own conversion (alpha over white, 16-bit scaled, not clipped), so an upload
# becomes exactly the pixels `mlx-caption caption` would compute for the same file.
from mlx_caption.data.preprocess import to_rgb
from mlx_caption.errors import UserError

# Pillow decoders the uploader tries. The JPEG opener also returns MPO images (the
# multi-picture JPEGs many phone cameras write), which have no opener of their own.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# File-name extensions offered by the page's file picker.
UPLOAD_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif")

DEFAULT_MAX_MB = 20
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: larger than any phone photo, far below a bomb


class UploadError(UserError):
    """An upload that cannot be captioned; the message is meant for the page."""


@dataclass(frozen=True)
class UploadLimits:
    """What the page accepts. ``max_bytes`` should match Streamlit's ``maxUploadSize``."""

    max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = 16


@dataclass
class LoadedImage:
    """A decoded upload: an RGB image plus notes worth showing (``st.warning``)."""

    name: str
    image: Image.Image
    format: str
    original_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _png_bit_depth(data: bytes) -> int | None:
    """Bit depth from a PNG's IHDR chunk (byte 24), which Pillow hides for 16-bit RGB(A)."""
    if len(data) > 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[24]
    return None


def _open_formats() -> list[str]:
    """The allowed formats whose decoders this Pillow has (registering its plugins first:
    ``Image.open(formats=...)`` fails on a name whose plugin is not loaded yet)."""
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def load_upload(name: str, data: bytes, limits: UploadLimits | None = None) -> LoadedImage:
    """Decode one uploaded file into an RGB image, or raise :class:`UploadError`.

    ``name`` is only used in messages. The returned image is EXIF-transposed (a phone photo
    taken in portrait is captioned upright) and always mode RGB, 8 bits.
    """
    limits = limits or UploadLimits()
    if len(data) == 0:
        raise UploadError(f"{name}: the file is empty.")
    if len(data) > limits.max_bytes:
        raise UploadError(
            f"{name}: the file is {_megabytes(len(data))}; the limit is "
            f"{_megabytes(limits.max_bytes)}."
        )
    supported = "JPEG, PNG, WebP or GIF"
    try:
        with warnings.catch_warnings():
            # Above Pillow's own threshold it only warns; our limit below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_open_formats())
    except Image.DecompressionBombError:
        raise UploadError(
            f"{name}: the image declares more pixels than this page decodes "
            f"(limit {limits.max_pixels:,})."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadError(
            f"{name}: this is not an image this page can read ({supported})."
        ) from None

    width, height = img.size
    if width * height > limits.max_pixels:
        raise UploadError(
            f"{name}: the image is {width} x {height} = {width * height:,} pixels; the limit "
            f"is {limits.max_pixels:,} (a guard against decompression bombs). Downscale it first."
        )

    notes: list[str] = []
    fmt = img.format or "?"
    frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        if frames > 1:
            img.seek(0)
            notes.append(f"{name}: an animated image with {frames} frames; captioning the first.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError:
        raise UploadError(
            f"{name}: the image declares more pixels than this page decodes "
            f"(limit {limits.max_pixels:,})."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        # Truncated files raise OSError("image file is truncated ..."); keep Pillow's words.
        reason = str(err).split("(")[0].strip() or type(err).__name__
        raise UploadError(
            f"{name}: the file is damaged or truncated and cannot be decoded ({reason})."
        ) from None

    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N") or _png_bit_depth(data) == 16:
        notes.append(f"{name}: a 16-bit image; converted to 8 bits per channel.")
    if img.mode == "CMYK":
        notes.append(f"{name}: a CMYK image; converted to RGB (colours may shift a little).")

    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001  (a broken EXIF block should not refuse a good image)
        notes.append(f"{name}: the EXIF orientation could not be read; shown as stored.")
    rgb = to_rgb(img)
    return LoadedImage(name=name, image=rgb, format=fmt, original_size=(width, height), notes=notes)
