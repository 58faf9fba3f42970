"""Random-initialised Hugging Face GIT captioners for tests (no downloads).

``save_hf_git(folder)`` writes what a hub repo of ``GitForCausalLM`` holds: ``config.json``,
``model.safetensors``, ``preprocessor_config.json`` (CLIP's processor, as git-base-coco ships
it; ImageNet's mean and std with ``imagenet=True``) and the BERT tokenizer files. The
architecture is the real one, shrunk in width and depth, with GIT-base's 224 px / 16 px
geometry and the real special ids ([PAD] 0, [UNK] 100, [CLS] 101 starts, [SEP] 102 ends).
"""

from __future__ import annotations

from pathlib import Path

from blip_fixtures import VOCAB, bert_vocab

import mlx_caption  # noqa: F401  (BLAS before mlx.core, in case a caller imports mlx next)

CLS, SEP = 101, 102
QK_SCALE = 3.0
IMAGE_SCALE = 8.0
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def hf_git_config(
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    text_hidden_size: int = 32,
    image_size: int = 224,
    patch_size: int = 16,
    max_positions: int = 64,
    vocab_size: int = len(VOCAB),
    dropout: float = 0.1,
):
    """A ``transformers.GitConfig``: real geometry and special ids, tiny body."""
    from transformers import GitConfig

    vision = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    return GitConfig(
        vision_config=vision,
        vocab_size=vocab_size,
        hidden_size=text_hidden_size,
        intermediate_size=2 * text_hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def make_hf_git(seed: int = 0, end_bias: float = 4.0, perturb: bool = True, **config_kwargs):
    """A random ``GitForCausalLM`` (eval mode) whose captions differ by image and end at
    different lengths (some run to the length limit): every parameter perturbed (LayerNorms
    too, so a swapped parameter shows), word embeddings and LM head large enough for clear
    next-token choices, image tokens large and attention peaked so that the image decides
    them (averaged over 197 random tokens, images would all look alike), and [SEP] raised by
    ``end_bias``."""
    import torch
    from transformers import GitForCausalLM

    torch.manual_seed(seed)
    model = GitForCausalLM(hf_git_config(**config_kwargs))
    if not perturb:  # transformers' own initialisation (a start for fine-tuning tests)
        return model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        emb = model.git.embeddings.word_embeddings.weight
        emb.copy_(0.3 * torch.randn_like(emb))
        model.output.weight.mul_(8.0)
        model.output.bias[SEP] += end_bias
        model.git.visual_projection.visual_projection[1].weight.mul_(IMAGE_SCALE)
        for layer in model.git.encoder.layer:  # peaked attention: the image decides
            attention = layer.attention.self
            for weight in (attention.query.weight, attention.key.weight):
                weight.mul_(QK_SCALE)
            attention.value.weight.mul_(4.0)
    return model.eval()


def image_processor(size: int = 224, imagenet: bool = False):
    """transformers' PIL CLIP image processor, GIT's (the reference for our preprocessing)."""
    from transformers import CLIPImageProcessorPil

    extra = {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD} if imagenet else {}
    return CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **extra
    )


def bert_tokenizer(vocab: list[str] = VOCAB):
    """transformers' BERT tokenizer over ``vocab`` (GIT's: no tokens added)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def save_hf_git(
    folder: Path | str,
    seed: int = 0,
    vocab_files: bool = False,
    imagenet: bool = False,
    words: list[str] | None = None,
    **model_kwargs,
) -> Path:
    """Save a random GIT captioner as the hub has them; returns the folder.

    ``vocab_files=True`` writes ``vocab.txt`` in place of ``tokenizer.json``; ``imagenet``
    writes git-base's processor (ImageNet mean/std) instead of git-base-coco's; ``words``
    replaces the test vocabulary's words.
    """
    folder = Path(folder)
    vocab = bert_vocab(words) if words is not None else VOCAB
    model = make_hf_git(seed, vocab_size=len(vocab), **model_kwargs)
    model.save_pretrained(folder)
    image_processor(model.config.vision_config.image_size, imagenet).save_pretrained(folder)
    bert_tokenizer(vocab).save_pretrained(folder)
    if vocab_files:
        (folder / "tokenizer.json").unlink()
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder
