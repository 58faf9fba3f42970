"""The model zoo: a table of names -> hub id, family, description, architecture and, for
captioners, the scores their authors published.

Pure data: loading a zoo model (converting it into the cache on first use) is
:func:`mlx_caption.loading.load_encoder` or :func:`~mlx_caption.loading.load_captioner`;
``mlx-caption zoo`` lists the table with parameters, size and what is converted locally.
Adding a model of an existing family is one row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlx_caption.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from mlx_caption.models.blip import BlipConfig, BlipTextConfig, BlipVisionConfig
from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.dinov2 import Dinov2Config
from mlx_caption.models.git import GitConfig, GitVisionConfig
from mlx_caption.models.siglip import SiglipVisionConfig, siglip_preprocess
from mlx_caption.models.vit import ViTConfig
from mlx_caption.models.vit_gpt2 import VitGpt2Config


@dataclass(frozen=True)
class Published:
    """Scores a captioner's authors published on the COCO Karpathy test split (BLEU-4 and
    CIDEr, percent; None where they published none), with where they come from and how the
    captions were decoded."""

    bleu4: float | None
    cider: float | None
    source: str


@dataclass(frozen=True)
class ZooEntry:
    """A registered model: where it comes from and its architecture.

    ``make_config`` builds a fresh config (architecture and preprocessing), so the zoo can
    show tokens and parameter counts and a recipe can size a model before any download.
    """

    name: str
    hub_id: str
    family: str
    kind: str  # "encoder" | "captioner"
    description: str
    make_config: Callable[[], Any]
    published: Published | None = None

    def describe(self) -> dict[str, Any]:
        """The row ``mlx-caption zoo`` shows (without the local state)."""
        cfg = self.make_config()
        vision = getattr(cfg, "vision", cfg)  # a captioner's image side
        row = {
            "name": self.name,
            "hub_id": self.hub_id,
            "family": self.family,
            "kind": self.kind,
            "description": self.description,
            "image_size": vision.input_size,
            "patch_size": vision.patch_size,
            "hidden_size": vision.hidden_size,
            "layers": vision.num_hidden_layers,
            "tokens": vision.num_tokens,
            "hidden_act": vision.hidden_act,
            "preprocess": vision.preprocess.summary(),
        }
        if self.published is not None:
            row["published"] = dataclasses.asdict(self.published)
        return row


def _clip(name: str, hub_id: str, description: str, **arch: Any) -> ZooEntry:
    """A CLIP vision tower: ``arch`` holds what differs from ViT-B/32 (the MLP is 4x wide;
    every checkpoint here has a 512- or 768-wide projection and CLIP's processor)."""

    def make_config() -> CLIPVisionConfig:
        arch.setdefault("projection_dim", 512)
        return CLIPVisionConfig(intermediate_size=4 * arch.get("hidden_size", 768), **arch)

    return ZooEntry(name, hub_id, "clip", "encoder", description, make_config)


# Widths and depths of the usual ViT sizes (base is every family's default; DINOv2 sizes its
# MLP by mlp_ratio, the others by intermediate_size).
LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16}
LARGE_MLP = {**LARGE, "intermediate_size": 4096}
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
          "num_attention_heads": 16}  # fmt: skip


def _siglip(name: str, description: str, image_size: int, **arch: Any) -> ZooEntry:
    """A SigLIP vision tower at ``image_size`` (SigLIP 2's processor resamples bilinear)."""
    hub_id = f"google/{name}"
    resample = "bilinear" if name.startswith("siglip2") else "bicubic"

    def make_config() -> SiglipVisionConfig:
        cfg = SiglipVisionConfig(image_size=image_size, **arch)
        cfg.preprocess = siglip_preprocess(image_size, resample)
        return cfg

    return ZooEntry(name, hub_id, "siglip", "encoder", description, make_config)


def _dinov2(name: str, description: str, **arch: Any) -> ZooEntry:
    """A DINOv2 checkpoint: a 518-px (37x37) position table, fed 224-px crops."""
    registers = "registers" in name

    def make_config() -> Dinov2Config:
        return Dinov2Config(
            image_size=518, with_registers=registers, num_register_tokens=4 * registers, **arch
        )

    return ZooEntry(name, f"facebook/{name}", "dinov2", "encoder", description, make_config)


def _vit(name: str, description: str, **arch: Any) -> ZooEntry:
    """A ViT with its pooler (google's ImageNet-21k checkpoints)."""

    def make_config() -> ViTConfig:
        return ViTConfig(**arch)

    return ZooEntry(name, f"google/{name}", "vit", "encoder", description, make_config)


_BLIP_PAPER = (
    "Li et al. 2022, BLIP (arXiv:2201.12086), Table 7, COCO Karpathy test, {row}; decoded "
    "with beam 3, prompt 'a picture of ', 5 to 20 tokens (the paper's caption_coco.yaml)"
)


def _blip(name: str, hub_id: str, description: str, published: Published, **vision: Any):
    """A BLIP captioner: ``vision`` holds what differs from ViT-B/16 at 384 px; the text
    decoder is BERT-base with 12 heads (as both hub configs have it)."""

    def make_config() -> BlipConfig:
        v = BlipVisionConfig(**vision)
        return BlipConfig(
            vision=v, text=BlipTextConfig(num_attention_heads=12, encoder_hidden_size=v.hidden_size)
        )

    return ZooEntry(name, hub_id, "blip", "captioner", description, make_config, published)


_GIT_REPO = (
    "Wang et al. 2022, GIT (arXiv:2205.14100), the authors' repository "
    "(github.com/microsoft/GenerativeImage2Text, README): CIDEr on the COCO Karpathy test "
    "split for {model}; BLEU-4 not given there"
)


def _git(
    name: str,
    description: str,
    imagenet: bool = False,
    published: Published | None = None,
    **vision: Any,
) -> ZooEntry:
    """A GIT captioner: ``vision`` holds what differs from CLIP ViT-B/16 at 224 px; the text
    decoder is GIT's 6-layer BERT-base. Plain git-base ships ImageNet's mean and std, the
    fine-tuned ones CLIP's."""

    def make_config() -> GitConfig:
        v = GitVisionConfig(**vision)
        if imagenet:
            v.preprocess = dataclasses.replace(
                v.preprocess, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
            )
        return GitConfig(vision=v)

    return ZooEntry(
        name, f"microsoft/{name}", "git", "captioner", description, make_config, published
    )


ENTRIES: list[ZooEntry] = [
    _clip(
        "clip-vit-base-patch32", "openai/clip-vit-base-patch32",
        "OpenAI CLIP ViT-B/32, 50 tokens",
    ),
    _clip(
        "clip-vit-base-patch16", "openai/clip-vit-base-patch16",
        "OpenAI CLIP ViT-B/16, 197 tokens", patch_size=16,
    ),
    _clip(
        "clip-vit-large-patch14", "openai/clip-vit-large-patch14",
        "OpenAI CLIP ViT-L/14, 257 tokens",
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
        projection_dim=768,
    ),
    _clip(
        "clip-vit-large-patch14-336", "openai/clip-vit-large-patch14-336",
        "OpenAI CLIP ViT-L/14 at 336 px, 577 tokens",
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
        image_size=336, projection_dim=768,
    ),
    _clip(
        "laion-clip-vit-b32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "OpenCLIP ViT-B/32 trained on LAION-2B (exact gelu), 50 tokens", hidden_act="gelu",
    ),
    _siglip("siglip-base-patch16-224", "SigLIP ViT-B/16, 196 tokens", 224),
    _siglip("siglip-base-patch16-256", "SigLIP ViT-B/16 at 256 px, 256 tokens", 256),
    _siglip("siglip-base-patch16-384", "SigLIP ViT-B/16 at 384 px, 576 tokens", 384),
    _siglip("siglip-base-patch16-512", "SigLIP ViT-B/16 at 512 px, 1024 tokens", 512),
    _siglip("siglip-large-patch16-256", "SigLIP ViT-L/16 at 256 px, 256 tokens", 256, **LARGE_MLP),
    _siglip("siglip-large-patch16-384", "SigLIP ViT-L/16 at 384 px, 576 tokens", 384, **LARGE_MLP),
    _siglip(
        "siglip-so400m-patch14-384", "SigLIP So400m/14 at 384 px, 729 tokens", 384,
        patch_size=14, **SO400M,
    ),
    _siglip("siglip2-base-patch16-224", "SigLIP 2 ViT-B/16, 196 tokens", 224),
    _siglip("siglip2-base-patch16-256", "SigLIP 2 ViT-B/16 at 256 px, 256 tokens", 256),
    _siglip("siglip2-base-patch16-384", "SigLIP 2 ViT-B/16 at 384 px, 576 tokens", 384),
    _siglip("siglip2-base-patch16-512", "SigLIP 2 ViT-B/16 at 512 px, 1024 tokens", 512),
    _siglip(
        "siglip2-large-patch16-256", "SigLIP 2 ViT-L/16 at 256 px, 256 tokens", 256, **LARGE_MLP
    ),
    _siglip(
        "siglip2-large-patch16-384", "SigLIP 2 ViT-L/16 at 384 px, 576 tokens", 384, **LARGE_MLP
    ),
    _siglip(
        "siglip2-large-patch16-512", "SigLIP 2 ViT-L/16 at 512 px, 1024 tokens", 512, **LARGE_MLP
    ),
    _siglip(
        "siglip2-so400m-patch14-384", "SigLIP 2 So400m/14 at 384 px, 729 tokens", 384,
        patch_size=14, **SO400M,
    ),
    _siglip(
        "siglip2-so400m-patch16-384", "SigLIP 2 So400m/16 at 384 px, 576 tokens", 384,
        **SO400M,
    ),
    _dinov2(
        "dinov2-small", "DINOv2 ViT-S/14, 224-px crops, 257 tokens",
        hidden_size=384, num_attention_heads=6,
    ),
    _dinov2("dinov2-base", "DINOv2 ViT-B/14, 224-px crops, 257 tokens"),
    _dinov2("dinov2-large", "DINOv2 ViT-L/14, 224-px crops, 257 tokens", **LARGE),
    _dinov2(
        "dinov2-with-registers-small", "DINOv2 ViT-S/14 with 4 registers, 261 tokens",
        hidden_size=384, num_attention_heads=6,
    ),
    _dinov2("dinov2-with-registers-base", "DINOv2 ViT-B/14 with 4 registers, 261 tokens"),
    _dinov2(
        "dinov2-with-registers-large", "DINOv2 ViT-L/14 with 4 registers, 261 tokens", **LARGE
    ),
    _vit("vit-base-patch16-224-in21k", "ViT-B/16 pretrained on ImageNet-21k, 197 tokens"),
    _vit(
        "vit-large-patch16-224-in21k", "ViT-L/16 pretrained on ImageNet-21k, 197 tokens",
        **LARGE_MLP,
    ),
    _blip(
        "blip-base", "Salesforce/blip-image-captioning-base",
        "BLIP captioner, ViT-B/16 at 384 px + BERT-base decoder, COCO fine-tuned",
        Published(39.7, 133.3, _BLIP_PAPER.format(row="BLIP CapFilt-L, 129M images, ViT-B")),
    ),
    _blip(
        "blip-large", "Salesforce/blip-image-captioning-large",
        "BLIP captioner, ViT-L/16 at 384 px + BERT-base decoder, COCO fine-tuned",
        Published(40.4, 136.7, _BLIP_PAPER.format(row="BLIP, 129M images, ViT-L")),
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    ),
    _git(
        "git-base", "GIT captioner, CLIP ViT-B/16 + 6-layer BERT decoder, pretrained (10M images)",
        imagenet=True,
    ),
    _git(
        "git-base-coco", "GIT-base fine-tuned on COCO captions, 197 image tokens",
        published=Published(None, 131.35, _GIT_REPO.format(model="GIT_BASE_COCO")),
    ),
    _git("git-base-textcaps", "GIT-base fine-tuned on TextCaps (scene text), 197 image tokens"),
    _git(
        "git-large-coco", "GIT-large fine-tuned on COCO captions, CLIP ViT-L/14, 257 image tokens",
        published=Published(None, 138.45, _GIT_REPO.format(model="GIT_LARGE_COCO")),
        patch_size=14, **LARGE_MLP,
    ),
    # Its authors published no COCO Karpathy-test scores (the model card has none).
    ZooEntry(
        "vit-gpt2", "nlpconnect/vit-gpt2-image-captioning", "vit_gpt2", "captioner",
        "ViT-GPT2 captioner, ViT-B/16 at 224 px + GPT-2 small decoder with cross-attention",
        VitGpt2Config,
    ),
]  # fmt: skip

ZOO: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}


def entries(kind: str | None = None) -> list[ZooEntry]:
    """The zoo's rows (of one ``kind`` if given), in table order."""
    return [e for e in ENTRIES if kind in (None, e.kind)]


def lookup(name_or_hub_id: str) -> ZooEntry | None:
    """The entry with this name or hub id, or None."""
    if name_or_hub_id in ZOO:
        return ZOO[name_or_hub_id]
    return next((e for e in ENTRIES if e.hub_id == name_or_hub_id), None)
