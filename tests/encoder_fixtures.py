"""Random-initialised Hugging Face SigLIP, DINOv2 and ViT checkpoints for tests (no downloads).

Geometry (image and patch size) is the real checkpoints'; width and depth are tiny. Every
parameter is perturbed away from its init (LayerNorm scales, layer scales, zero biases), so a
swapped or missing tensor shows up in a parity test::

    from encoder_fixtures import make_hf_encoder, save_hf_encoder
    model = make_hf_encoder("siglip", image_size=224, patch_size=16)
    folder = save_hf_encoder(tmp_path / "dino", "dinov2", variant="registers")

Variants: siglip "vision" (``SiglipVisionModel``) or "full" (``SiglipModel`` with a tiny text
tower, as the hub has them); dinov2 "plain" or "registers" (``Dinov2WithRegistersModel``);
vit "pooler" (``ViTModel``), "no_pooler", or "encoder_decoder" (a ``VisionEncoderDecoderModel``
with a tiny GPT-2, as ViT-GPT2).
"""

from __future__ import annotations

from pathlib import Path

import mlx_caption  # noqa: F401  (BLAS before mlx.core, in case a caller imports mlx next)

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
VARIANTS = {
    "siglip": ("vision", "full"),
    "dinov2": ("plain", "registers"),
    "vit": ("pooler", "no_pooler", "encoder_decoder"),
}
DEFAULT_GEOMETRY = {
    "siglip": {"image_size": 32, "patch_size": 16},
    "dinov2": {"image_size": 42, "patch_size": 14},
    "vit": {"image_size": 32, "patch_size": 16},
}


def hf_config(family: str, variant: str | None = None, **overrides):
    """The transformers config of a tiny model of ``family`` (``overrides`` win)."""
    import transformers

    variant = variant or VARIANTS[family][0]
    mlp = {} if family == "dinov2" else {"intermediate_size": 64}  # DINOv2: mlp_ratio 4
    args = {**TINY, **mlp, **DEFAULT_GEOMETRY[family], **overrides}
    if family == "siglip":
        return transformers.SiglipVisionConfig(**args)
    if family == "dinov2":
        if variant == "registers":
            return transformers.Dinov2WithRegistersConfig(**args)
        return transformers.Dinov2Config(**args)
    return transformers.ViTConfig(**args)


def make_hf_encoder(family: str, variant: str | None = None, seed: int = 0, **overrides):
    """A random torch model of ``family``/``variant`` in eval mode, every parameter perturbed."""
    import torch
    import transformers

    variant = variant or VARIANTS[family][0]
    torch.manual_seed(seed)
    cfg = hf_config(family, variant, **overrides)
    if family == "siglip" and variant == "full":
        text = {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 16,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        }  # fmt: skip
        full = transformers.SiglipConfig(text_config=text, vision_config=cfg.to_dict())
        model = transformers.SiglipModel(full)
    elif family == "siglip":
        model = transformers.SiglipVisionModel(cfg)
    elif family == "dinov2":
        cls = transformers.Dinov2WithRegistersModel if variant == "registers" else None
        model = (cls or transformers.Dinov2Model)(cfg)
    elif variant == "encoder_decoder":
        gpt2 = transformers.GPT2Config(
            n_embd=32, n_layer=1, n_head=4, vocab_size=100, n_positions=16,
            add_cross_attention=True, is_decoder=True,
        )  # fmt: skip
        both = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(cfg, gpt2)
        model = transformers.VisionEncoderDecoderModel(both)
    else:
        model = transformers.ViTModel(cfg, add_pooling_layer=variant == "pooler")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def image_processor(family: str, **kwargs):
    """transformers' PIL image processor of ``family`` (the reference for preprocessing)."""
    import transformers

    classes = {
        "siglip": transformers.SiglipImageProcessorPil,
        "dinov2": transformers.BitImageProcessorPil,
        "vit": transformers.ViTImageProcessorPil,
    }
    return classes[family](**kwargs)


def processor_args(family: str, image_size: int) -> dict:
    """The hub's ``preprocessor_config.json`` settings of ``family`` for an image size."""
    square = {"height": image_size, "width": image_size}
    if family == "dinov2":  # shortest side 256, crop 224, ImageNet mean/std (scaled)
        return {
            "size": {"shortest_edge": round(image_size * 256 / 224)}, "crop_size": square,
            "resample": 3, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": True,
        }  # fmt: skip
    half = [0.5, 0.5, 0.5]
    resample = 3 if family == "siglip" else 2
    return {"size": square, "resample": resample, "image_mean": half, "image_std": half}


def save_hf_encoder(
    folder: Path | str,
    family: str,
    variant: str | None = None,
    seed: int = 0,
    processor: dict | None = None,
    **overrides,
) -> Path:
    """Save a random checkpoint like the hub has them (``save_pretrained``) and its
    ``preprocessor_config.json`` (``processor`` overrides the family's settings; ``{}``: none).
    The processor's size is the checkpoint's, but smaller for DINOv2, as on the hub (518 and
    224 there; 42 and 28 here)."""
    folder = Path(folder)
    model = make_hf_encoder(family, variant, seed, **overrides)
    model.save_pretrained(folder)
    if processor != {}:
        cfg = getattr(model.config, "vision_config", None) or getattr(
            model.config, "encoder", model.config
        )
        size = cfg.image_size if family != "dinov2" else 28  # a 2x2 grid on a 3x3 table
        args = {**processor_args(family, size), **(processor or {})}
        image_processor(family, **args).save_pretrained(folder)
    return folder


def torch_forward(model, pixels_nhwc, **kwargs):
    """The torch model's output for NHWC numpy pixels, with every hidden state (positions
    resized to the input's grid, ``interpolate_pos_encoding=True``, where the model asks)."""
    from mlx_caption.models.reference import forward

    return forward(model, pixels_nhwc, output_hidden_states=True, **kwargs)


def vision_tower(model):
    """The vision part of a two-tower or encoder-decoder torch model (else the model)."""
    if hasattr(model, "text_model"):
        return model.vision_model
    if hasattr(model, "decoder") and hasattr(model, "encoder"):
        return model.encoder
    return model


def mlx_twin(family: str, model):
    """The MLX encoder of ``family`` with a torch model's weights, through ``sanitize`` and
    ``from_hf`` (the path a checkpoint takes), in eval mode."""
    import json

    import mlx.core as mx

    from mlx_caption.models.registry import FAMILIES

    fam = FAMILIES[family]
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    weights = fam.model_class.sanitize(state)
    cfg = fam.config_class.from_hf(json.loads(model.config.to_json_string()), None, set(weights))
    encoder = fam.model_class(cfg)
    encoder.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    encoder.eval()
    return encoder
