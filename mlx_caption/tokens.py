"""Special tokens: our tokenizer's fixed ids, and the description every captioner gives the
generation engine of its own (pretrained captioners keep their tokenizer's ids)."""

from __future__ import annotations

from dataclasses import dataclass

# The ids of every tokenizer this project trains or adopts (see tokenizer.CaptionTokenizer).
PAD, START, END, UNK = 0, 1, 2, 3
SPECIAL_TOKEN_NAMES = ("<pad>", "<start>", "<end>", "<unk>")

# Fills training rows after a caption's end token. It is no tokenizer's id, so the loss tells
# padding from text without asking which id a tokenizer pads with (GPT-2 pads with its end
# token, which a caption's last target must be).
NO_TOKEN = -1


@dataclass(frozen=True)
class SpecialTokens:
    """How a captioner's captions begin and end.

    Attributes:
        start: the ids every caption starts with (fed to the decoder before the first
            generated token; a text prompt's ids follow them).
        end: the id that ends a caption.
        pad: the id written after the end of a finished caption.
        suppressed: ids never generated (for ours: ``<pad>`` and ``<start>``).
        unk: the unknown-token id, suppressed too when decoding asks for ``ban_unk``.
    """

    start: tuple[int, ...]
    end: int
    pad: int
    suppressed: tuple[int, ...] = ()
    unk: int | None = None


CAPTION_TOKENS = SpecialTokens(start=(START,), end=END, pad=PAD, suppressed=(PAD, START), unk=UNK)
