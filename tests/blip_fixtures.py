"""Random-initialised Hugging Face BLIP captioners for tests (no downloads).

``save_hf_blip(folder)`` writes what a hub repo of ``BlipForConditionalGeneration`` holds:
``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and the BERT tokenizer
files (``tokenizer.json``, ``tokenizer_config.json``; ``vocab.txt`` too when asked). The
architecture is the real one, shrunk in width and depth, with BLIP's 384 px / 16 px geometry
and the real special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [DEC] and [ENC] added after
the vocabulary).
"""

from __future__ import annotations

from pathlib import Path

import mlx_caption  # noqa: F401  (BLAS before mlx.core, in case a caller imports mlx next)

WORDS = (
    "a an the of on in with and at two three man woman dog cat cats dogs bird red blue green "
    "white black small large big picture photo sitting standing next to near table grass "
    "street car bus train tree ##s ##ing ##ed . , ' young old people group field"
).split()
SEP = 102


def bert_vocab(words: list[str]) -> list[str]:
    """BERT's layout: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, words."""
    return [
        "[PAD]",
        *(f"[unused{i}]" for i in range(99)),
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *words,
    ]


VOCAB = bert_vocab(WORDS)


def bert_tokenizer(vocab: list[str] = VOCAB):
    """transformers' BLIP tokenizer over ``vocab``, with [DEC] (bos) and [ENC] added."""
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def hf_blip_config(
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    text_hidden_size: int = 32,
    image_size: int = 384,
    patch_size: int = 16,
    max_positions: int = 64,
    vocab_size: int = len(VOCAB) + 2,
    vision_init: float = 1e-10,
):
    """A ``transformers.BlipConfig``: real geometry and special ids ([DEC] right after the
    vocabulary, then [ENC]), tiny body. ``vision_init`` is the vision tower's init std:
    transformers' 1e-10 leaves a tower that only pretrained weights bring to life, so a
    model trained from its initialisation needs a real one (0.02)."""
    from transformers import BlipConfig

    vocab = vocab_size
    vision = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        initializer_range=vision_init,
    )
    text = dict(
        vocab_size=vocab,
        hidden_size=text_hidden_size,
        intermediate_size=2 * text_hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=vocab - 2,
        sep_token_id=SEP,
        pad_token_id=0,
    )
    return BlipConfig(vision_config=vision, text_config=text)


def make_hf_blip(seed: int = 0, end_bias: float = 2.0, perturb: bool = True, **config_kwargs):
    """A random ``BlipForConditionalGeneration`` (eval mode) whose captions differ by image
    and end at different lengths (some run to the length limit): every parameter perturbed
    (LayerNorms too, so a swapped parameter shows), word embeddings large enough for clear
    next-token choices, cross-attention strong enough that the image decides them, and [SEP]
    raised by ``end_bias``."""
    import torch
    from transformers import BlipForConditionalGeneration

    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(hf_blip_config(**config_kwargs))
    if not perturb:  # transformers' own initialisation (a start for fine-tuning tests)
        return model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        emb = model.text_decoder.bert.embeddings.word_embeddings.weight
        emb.copy_(0.3 * torch.randn_like(emb))
        model.text_decoder.cls.predictions.bias[SEP] += end_bias
        for layer in model.text_decoder.bert.encoder.layer:
            layer.crossattention.self.value.weight.mul_(6.0)
            layer.crossattention.output.dense.weight.mul_(6.0)
    return model.eval()


def image_processor(size: int = 384):
    """transformers' PIL BLIP image processor (the reference for our preprocessing)."""
    from transformers import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": size, "width": size})


def save_hf_blip(
    folder: Path | str,
    seed: int = 0,
    vocab_files: bool = False,
    words: list[str] | None = None,
    **model_kwargs,
) -> Path:
    """Save a random BLIP captioner as the hub has them; returns the folder.

    ``vocab_files=True`` writes ``vocab.txt`` in place of ``tokenizer.json`` (the tokenizer
    must then be rebuilt from it, as transformers does); ``words`` replaces the test
    vocabulary's words (the special ids stay where BERT has them).
    """
    folder = Path(folder)
    vocab = bert_vocab(words) if words is not None else VOCAB
    model = make_hf_blip(seed, vocab_size=len(vocab) + 2, **model_kwargs)
    model.save_pretrained(folder)
    image_processor(model.config.vision_config.image_size).save_pretrained(folder)
    bert_tokenizer(vocab).save_pretrained(folder)
    if vocab_files:
        (folder / "tokenizer.json").unlink()
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder
