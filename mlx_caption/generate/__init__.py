"""Caption generation, one engine for every captioner: greedy, beam search and sampling,
batched over images, over a preallocated KV cache, in one compiled step.

A captioner speaks the engine's protocol: ``encode(pixels)`` (image tokens),
``decoding_memory(image_tokens)`` (what every step reads of the image, computed once),
``make_cache(batch, length)``, ``decode_step(tokens, memory, cache, offset,
return_attention)``, ``special_tokens`` (:class:`~mlx_caption.tokens.SpecialTokens`),
``vocab_size``, ``max_positions`` and ``default_max_length``.

Modules: :mod:`.config` (options, the caption), :mod:`.logits` (logit processors),
:mod:`.step` (the compiled step), :mod:`.search` (the loops), :mod:`.beams` (beam
bookkeeping), :mod:`.api` (``decode``, ``generate``, ``caption``).
"""

from mlx_caption.generate.api import caption, decode, generate
from mlx_caption.generate.config import STRATEGIES, Caption, DecodingConfig

__all__ = ["STRATEGIES", "Caption", "DecodingConfig", "caption", "decode", "generate"]
