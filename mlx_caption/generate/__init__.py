"""Caption generation, one engine for every captioner: greedy, beam search and sampling,
batched over images, over a preallocated KV cache, in one compiled step.

A captioner gives image tokens with ``encode(pixels)``; its ``decoder`` speaks the engine's
protocol:

- ``decoding_memory(image_tokens)``: what every step reads of the image, computed once
  (cross-attention keys/values, or an image prefix's), any tree of arrays with the batch on
  axis 0;
- ``make_cache(batch, length)``: empty self-attention caches (:class:`KVCache` per layer);
- ``decode_step(tokens, memory, cache, offset, return_attention)``: logits ``(B, L, vocab)``
  of ``tokens`` written at ``offset``, and their attention over the image ``(B, L, T)`` or
  None;
- ``special_tokens`` (:class:`~mlx_caption.tokens.SpecialTokens`), ``vocab_size``,
  ``max_positions`` and ``default_max_length``.

Modules: :mod:`.config` (options, the caption), :mod:`.logits` (logit processors),
:mod:`.step` (the compiled step), :mod:`.search` (the loops), :mod:`.beams` (beam
bookkeeping), :mod:`.api` (``decode``, ``generate``, ``caption``).
"""

from mlx_caption.generate.api import caption, decode, generate
from mlx_caption.generate.config import STRATEGIES, Caption, DecodingConfig

__all__ = ["STRATEGIES", "Caption", "DecodingConfig", "caption", "decode", "generate"]
