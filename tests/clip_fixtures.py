"""Random-initialised Hugging Face CLIP checkpoints for tests (no downloads).

Usable from any test module::

    from clip_fixtures import save_hf_clip, hf_vision_config
    folder = save_hf_clip(tmp_path / "clip", kind="vision", geometry="B/32")

``kind`` picks the architecture the folder holds: ``"vision"`` (CLIPVisionModel),
``"vision_proj"`` (CLIPVisionModelWithProjection) or ``"clip"`` (CLIPModel with a tiny text
tower). Geometry keeps the real image/patch sizes; width and depth are tiny.
"""

from __future__ import annotations

from pathlib import Path

import mlx_caption  # noqa: F401  (BLAS before mlx.core, in case a caller imports mlx next)

GEOMETRIES = {
    "B/32": (224, 32),
    "B/16": (224, 16),
    "L/14": (224, 14),
    "L/14-336": (336, 14),
    "tiny": (64, 16),
}


def hf_vision_config(
    geometry: str = "B/32",
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 64,
    projection_dim: int = 16,
    hidden_act: str = "quick_gelu",
):
    """A ``transformers.CLIPVisionConfig`` with real patch geometry and a tiny body."""
    from transformers import CLIPVisionConfig

    image_size, patch_size = GEOMETRIES[geometry]
    return CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=projection_dim,
        hidden_act=hidden_act,
    )


def make_hf_clip(kind: str = "vision", seed: int = 0, **config_kwargs):
    """A random torch CLIP model (eval mode) with every parameter perturbed away from its init.

    The perturbation makes LayerNorm scales/biases non-trivial so parity tests catch a
    swapped or missing parameter.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(seed)
    vcfg = hf_vision_config(**config_kwargs)
    if kind == "vision":
        model = CLIPVisionModel(vcfg)
    elif kind == "vision_proj":
        model = CLIPVisionModelWithProjection(vcfg)
    elif kind == "clip":
        text = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=100,
            max_position_embeddings=16,
        )
        cfg = CLIPConfig(
            vision_config=vcfg.to_dict(),
            text_config=text,
            projection_dim=vcfg.projection_dim,
        )
        model = CLIPModel(cfg)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def save_hf_clip(
    folder: Path | str,
    kind: str = "vision",
    seed: int = 0,
    safe_serialization: bool = True,
    max_shard_size: str | int | None = None,
    preprocessor: dict | None = None,
    **config_kwargs,
) -> Path:
    """Save a random CLIP checkpoint like the hub has them; returns the folder.

    ``safe_serialization=False`` writes ``pytorch_model.bin`` (needs torch to read back);
    ``max_shard_size`` shards the safetensors with an index file. A
    ``preprocessor_config.json`` is written from ``preprocessor`` (CLIPImageProcessor
    arguments) unless it is ``{}``.
    """
    import torch

    folder = Path(folder)
    model = make_hf_clip(kind, seed, **config_kwargs)
    if safe_serialization:
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(folder, **kwargs)
    else:
        # transformers 5 always writes safetensors; write the legacy .bin layout by hand.
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    if preprocessor != {}:
        img = model_image_size(model)
        args = {"size": img, "crop_size": {"height": img, "width": img}, **(preprocessor or {})}
        image_processor(**args).save_pretrained(folder)
    return folder


def model_image_size(model) -> int:
    cfg = getattr(model.config, "vision_config", model.config)
    return cfg.image_size


def image_processor(size: int | dict = 224, **kwargs):
    """transformers' PIL CLIP image processor (the reference for our preprocessing)."""
    from transformers import CLIPImageProcessorPil

    if isinstance(size, dict):
        size = size["shortest_edge"]
    args = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    args.update(kwargs)
    return CLIPImageProcessorPil(**args)


def torch_vision_forward(model, pixels_nhwc):
    """Run a torch CLIP vision model on NHWC numpy pixels; returns numpy outputs by name."""
    import torch

    x = torch.from_numpy(pixels_nhwc).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        if hasattr(model, "vision_model") and hasattr(model, "text_model"):
            out = model.vision_model(pixel_values=x, output_hidden_states=True)
            embeds = model.visual_projection(out.pooler_output)
            pooled = out.pooler_output
        else:
            out = model(pixel_values=x, output_hidden_states=True)
            embeds = getattr(out, "image_embeds", None)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:  # WithProjection output has no pooler: recompute it
                vm = model.vision_model
                pooled = vm.post_layernorm(out.last_hidden_state[:, 0])
    result = {
        "last_hidden_state": out.last_hidden_state.numpy(),
        "pooler_output": pooled.numpy(),
        "hidden_states": [h.numpy() for h in out.hidden_states],
    }
    if embeds is not None:
        result["image_embeds"] = embeds.numpy()
    return result
