"""Random-initialised Hugging Face ViT-GPT2 captioners for tests (no downloads).

``save_hf_vit_gpt2(folder)`` writes what a hub repo of ``VisionEncoderDecoderModel`` (ViT +
GPT-2) holds: ``config.json``, ``generation_config.json``, ``model.safetensors``,
``preprocessor_config.json`` (ViT's: 224 px, bilinear, mean/std 0.5) and GPT-2 tokenizer files
(``tokenizer.json``, ``tokenizer_config.json``; ``vocab.json`` and ``merges.txt`` instead when
asked). The architecture is the real one, shrunk in width and depth, with ViT-B/16's 224 px /
16 px geometry (197 tokens) and an encoder wider than the decoder (so ``enc_to_dec_proj``
exists); the byte-level BPE is trained here on a small word list, with ``<|endoftext|>`` as
the last id, which, as in nlpconnect's checkpoint, is the decoder start, end and pad token.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx_caption  # noqa: F401  (BLAS before mlx.core, in case a caller imports mlx next)

WORDS = (
    "a an the of on in with and at two three man woman dog cat cats dogs bird red blue green "
    "white black small large big picture photo sitting standing next to near table grass "
    "street car bus train tree young old people group field , . '"
).split()
END_TOKEN = "<|endoftext|>"
BPE_SIZE = 420  # 256 bytes, then merges


def write_bpe_files(folder: Path, words: list[str] = WORDS) -> int:
    """Train a GPT-2-style byte-level BPE on ``words`` and write ``vocab.json`` and
    ``merges.txt``; returns the vocabulary size (``<|endoftext|>`` is its last id)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE, special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    lines = [" ".join(words), *(f"{a} {b}" for a in words for b in words[:8])]
    tokenizer.train_from_iterator(lines, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab[END_TOKEN] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return len(vocab)


def gpt2_tokenizer(folder: Path):
    """transformers' GPT-2 tokenizer over the files :func:`write_bpe_files` wrote."""
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def hf_vit_gpt2_config(
    vocab_size: int,
    hidden_size: int = 48,
    text_hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    image_size: int = 224,
    patch_size: int = 16,
    max_positions: int = 64,
    **gpt2: object,
):
    """A ``transformers.VisionEncoderDecoderConfig``: ViT + GPT-2 with cross-attention, the
    last id (``<|endoftext|>``) as decoder start, end and pad, as nlpconnect's config has it."""
    import transformers

    end = vocab_size - 1
    vit = transformers.ViTConfig(
        hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
    )  # fmt: skip
    decoder = transformers.GPT2Config(
        vocab_size=vocab_size, n_embd=text_hidden_size, n_layer=layers, n_head=heads,
        n_positions=max_positions, bos_token_id=end, eos_token_id=end,
        add_cross_attention=True, is_decoder=True, **gpt2,
    )  # fmt: skip
    both = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, decoder)
    both.decoder_start_token_id = both.eos_token_id = both.pad_token_id = end
    return both


def make_hf_vit_gpt2(
    vocab_size: int,
    seed: int = 0,
    end_bias: float = 5.0,
    perturb: bool = True,
    **config_kwargs,
):
    """A random ``VisionEncoderDecoderModel`` (eval mode) whose captions differ by image and
    end at different lengths (some run to the length limit): every parameter perturbed
    (LayerNorms too, so a swapped parameter shows), word and position embeddings large enough
    for clear next-token choices that change along the caption, cross-attention strong
    enough that the image decides them, and the end token's logit raised by ``end_bias``
    (``ln_f``'s bias leans towards its embedding: the LM head is tied and has no bias).
    ``ln_f``'s scale is negated: with a tied head, a random pre-LN GPT-2 otherwise mostly
    predicts the token it was just fed (its embedding runs straight down the residual
    stream), so captions would repeat one token, and the start token (the end token) would
    end them at once."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.VisionEncoderDecoderModel(hf_vit_gpt2_config(vocab_size, **config_kwargs))
    if not perturb:  # transformers' own initialisation (a start for fine-tuning tests)
        return model.eval()
    gpt2 = model.decoder.transformer
    d = gpt2.wte.weight.shape[1]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        gpt2.wte.weight.copy_(0.3 * torch.randn_like(gpt2.wte.weight))
        gpt2.wpe.weight.copy_(0.3 * torch.randn_like(gpt2.wpe.weight))
        gpt2.ln_f.weight.neg_()
        end = gpt2.wte.weight[vocab_size - 1]
        gpt2.ln_f.bias.add_(end_bias * end / end.norm() ** 2)
        for block in gpt2.h:
            block.crossattention.c_attn.weight[:, d:].mul_(6.0)  # the values (Conv1D: in, out)
            block.crossattention.c_proj.weight.mul_(6.0)
    return model.eval()


def image_processor(size: int = 224):
    """transformers' PIL ViT image processor (the reference for our preprocessing), as
    nlpconnect's preprocessor_config.json sets it."""
    from transformers import ViTImageProcessorPil

    half = [0.5, 0.5, 0.5]
    return ViTImageProcessorPil(
        size={"height": size, "width": size}, resample=2, image_mean=half, image_std=half
    )


def save_hf_vit_gpt2(
    folder: Path | str,
    seed: int = 0,
    vocab_files: bool = False,
    words: list[str] | None = None,
    **model_kwargs,
) -> Path:
    """Save a random ViT-GPT2 captioner as the hub has them; returns the folder.

    ``vocab_files=True`` leaves ``vocab.json`` and ``merges.txt`` in place of
    ``tokenizer.json`` (the tokenizer must then be rebuilt from them, as transformers does);
    ``words`` replaces the word list the BPE is trained on.
    """
    folder = Path(folder)
    vocab_size = write_bpe_files(folder, words or WORDS)
    model = make_hf_vit_gpt2(vocab_size, seed, **model_kwargs)
    model.save_pretrained(folder)
    image_processor(model.config.encoder.image_size).save_pretrained(folder)
    gpt2_tokenizer(folder).save_pretrained(folder)
    if vocab_files:
        (folder / "tokenizer.json").unlink(missing_ok=True)
    else:
        for name in ("vocab.json", "merges.txt"):
            (folder / name).unlink(missing_ok=True)
    return folder
