"""Caption generation, one engine for every captioner: greedy, beam search and sampling,
batched over images, over a preallocated KV cache, in one compiled step.

A captioner gives image tokens with ``encode(pixels)``; its ``decoder`` speaks the engine's
protocol:

- ``decoding_memory(image_tokens)``: what every step reads of the image, computed once
  (cross-attention keys/values, or an image prefix's), any tree of arrays with one row per
  image on axis 0; a step's rows are the images' rows grouped by image (image ``i`` owns rows
  ``i*g .. i*g+g-1``: its beams or samples), which
  :func:`~mlx_caption.models.layers.attend` handles without copying the memory per row;
- ``make_cache(batch, length)``: empty self-attention caches (:class:`KVCache` per layer);
- ``decode_step(tokens, memory, cache, offset, return_attention)``: logits ``(B, L, vocab)``
  of ``tokens`` written at ``offset``, and their attention over the image ``(B, L, T)`` or
  None;
- ``special_tokens`` (:class:`~mlx_caption.tokens.SpecialTokens`), ``vocab_size``,
  ``max_positions`` (positions, start tokens and prompt included), and the defaults of
  :class:`DecodingConfig` it wants: ``default_max_length`` (generated tokens),
  ``default_length_counts_prompt`` (a prompt's tokens come out of it, as they do of a
  ``max_length`` a pretrained checkpoint sets, in transformers) and ``default_early_stopping``.

Greedy and beam search follow transformers' ``generate`` token for token (the BLIP parity
test checks it): lengths count generated tokens, the prompt excluded (transformers'
``max_new_tokens``, ``min_new_tokens``, and its length penalty); beam search keeps the
finished hypotheses and stops as transformers does (see :mod:`.beams`).

Modules: :mod:`.config` (options, the caption), :mod:`.logits` (logit processors),
:mod:`.step` (the compiled step), :mod:`.search` (the loops), :mod:`.beams` (beam
bookkeeping), :mod:`.api` (``decode``, ``generate``, ``caption``).
"""

from mlx_caption.generate.api import caption, decode, generate
from mlx_caption.generate.config import STRATEGIES, Caption, DecodingConfig

__all__ = ["STRATEGIES", "Caption", "DecodingConfig", "caption", "decode", "generate"]
