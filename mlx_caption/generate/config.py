"""Decoding options and the generated caption."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlx_caption.errors import UserError

STRATEGIES = ("greedy", "beam", "sample")


@dataclass
class DecodingConfig:
    """Options of :func:`~mlx_caption.generate.generate`.

    Attributes:
        strategy: ``"greedy"``, ``"beam"`` or ``"sample"``.
        max_length: most tokens generated per caption (the end token included, the prompt
            not: transformers' ``max_new_tokens``); defaults to the model's usual caption
            length (less the prompt's tokens where the model's default counts them), within
            what its positions leave after the start tokens and prompt.
        min_length: the end token is forbidden before this many generated tokens
            (transformers' ``min_new_tokens``).
        num_beams: beams per image (beam search).
        length_penalty: beam hypotheses rank by ``logprob / length ** length_penalty``, the
            length counting generated tokens (the end token included, the prompt not).
        early_stopping: beam search stops an image once it has ``num_beams`` finished
            hypotheses; if False, once no running beam can beat the worst of them; None: the
            model's default (ours: True; pretrained captioners: their generation config's,
            transformers' False when it says nothing).
        num_return_sequences: captions per image (the best plus ``alternatives``); by default
            all beams for beam search, one otherwise.
        temperature, top_k, top_p, seed: sampling (``top_k=0`` and ``top_p=1`` disable).
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0 disables).
        repetition_penalty: CTRL-style penalty (>1) on tokens already generated.
        ban_unk: never generate the unknown token (for models that have one).
        prompt: text every caption starts with (``"a picture of"``); it is part of the
            returned text, not of ``token_ids``.
        return_attention: attach cross-attention maps, one ``(T_image,)`` row per token.
        compile: compile the decoding step with ``mx.compile``.
    """

    strategy: str = "greedy"
    max_length: int | None = None
    min_length: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0
    early_stopping: bool | None = None
    num_return_sequences: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    ban_unk: bool = True
    prompt: str | None = None
    return_attention: bool = False
    compile: bool = True

    def replace(self, **options: Any) -> DecodingConfig:
        """A copy with ``options`` changed; unknown names raise :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UserError(f"unknown decoding option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **options)

    def resolved(
        self, positions_left: int, default_length: int, default_early_stopping: bool = True
    ) -> DecodingConfig:
        """Checked, with ``max_length``, ``early_stopping`` and ``num_return_sequences``
        filled in.

        ``positions_left`` is how many tokens the model can still generate after its start
        tokens and the prompt; ``default_length`` and ``default_early_stopping`` are the
        model's own defaults.
        """
        if self.strategy not in STRATEGIES:
            raise UserError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if positions_left < 1:
            raise UserError("the prompt leaves no position of the model to generate into")
        max_length = self.max_length
        if max_length is None:
            max_length = min(default_length, positions_left)
        if not 1 <= max_length <= positions_left:
            raise UserError(
                f"max_length must be between 1 and {positions_left} (the positions the model "
                "has left after its start tokens and the prompt)"
            )
        if self.min_length < 0 or self.min_length > max_length:
            raise UserError("min_length must be between 0 and max_length")
        if self.num_beams < 1:
            raise UserError("num_beams must be at least 1")
        if self.temperature <= 0:
            raise UserError("temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise UserError("top_p must be in (0, 1]")
        if self.top_k < 0 or self.no_repeat_ngram_size < 0 or self.repetition_penalty <= 0:
            raise UserError("top_k and no_repeat_ngram_size must be >= 0, repetition_penalty > 0")
        n_return = self.num_return_sequences
        if n_return is None:
            n_return = self.num_beams if self.strategy == "beam" else 1
        if n_return < 1:
            raise UserError("num_return_sequences must be at least 1")
        if self.strategy == "beam" and n_return > self.num_beams:
            raise UserError("num_return_sequences cannot exceed num_beams")
        if self.strategy == "greedy" and n_return > 1:
            raise UserError("greedy decoding returns one sequence per image; use beam or sample")
        early = default_early_stopping if self.early_stopping is None else self.early_stopping
        return dataclasses.replace(
            self, max_length=max_length, num_return_sequences=n_return, early_stopping=early
        )


@dataclass
class Caption:
    """One generated caption.

    Attributes:
        text: decoded text (the prompt, if any, then the generated tokens; specials dropped).
        token_ids: generated ids (start tokens and prompt excluded), ending with the end
            token if ``finished``.
        score: ranking score: ``logprob / len(token_ids) ** length_penalty`` for beam search,
            ``logprob`` otherwise.
        logprob: sum of the tokens' log-probabilities (after the decoding constraints such as
            banned tokens, before temperature/top-k/top-p).
        finished: the end token was generated (False: cut at ``max_length``).
        alternatives: the other returned sequences (other beams or samples), best first.
        attention: ``(len(token_ids), T_image)`` cross-attention of each generated token over
            the image tokens, averaged over heads and layers; rows sum to 1.
    """

    text: str
    token_ids: list[int]
    score: float
    logprob: float
    finished: bool
    alternatives: list[Caption] = field(default_factory=list)
    attention: np.ndarray | None = None

    def attention_grid(self) -> np.ndarray:
        """Patch attention as ``(n_tokens, g, g)``, dropping the leading class token."""
        if self.attention is None:
            raise ValueError("generated without return_attention=True")
        patches = self.attention[:, 1:]
        g = math.isqrt(patches.shape[1])
        if g * g != patches.shape[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
        return patches.reshape(len(patches), g, g)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (attention as nested lists when present)."""
        d = {
            "caption": self.text,
            "score": self.score,
            "logprob": self.logprob,
            "token_ids": list(self.token_ids),
            "finished": self.finished,
            "alternatives": [
                {"caption": a.text, "score": a.score, "logprob": a.logprob}
                for a in self.alternatives
            ],
        }
        if self.attention is not None:
            d["attention"] = self.attention.tolist()
        return d
