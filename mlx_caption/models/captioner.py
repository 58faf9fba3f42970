"""The captioner: CLIP vision transformer -> projector -> text decoder; save and load.

The decoder cross-attends to the encoder's whole ``last_hidden_state`` token grid (class
token first, then the patches), mapped to the decoder width by the projector. The projector
starts with a LayerNorm: CLIP's last hidden state is the residual stream before any final
norm, with a few very large channels, and normalising it keeps the cross-attention keys
well scaled whatever encoder is plugged in.

A checkpoint is a folder with ``model.safetensors`` (every parameter, encoder included, so
it is self-contained), ``config.json`` (``CaptionerConfig.to_dict()``) and
``tokenizer.json``; training adds ``optimizer.safetensors`` and ``state.json`` to the same
folder (see :mod:`mlx_caption.train.checkpoint`, which writes the model part with
:func:`write_model_files`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_caption.config import CaptionerConfig
from mlx_caption.errors import UserError
from mlx_caption.models.activations import gelu_tanh as gelu
from mlx_caption.models.decoder import TextDecoder
from mlx_caption.models.vit import VisionTransformer

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE)
PROJECTORS = ("linear", "mlp")


class Projector(nn.Module):
    """LayerNorm, then Linear (``"linear"``) or Linear-GELU-Linear (``"mlp"``): image width
    -> decoder width."""

    def __init__(self, in_dims: int, out_dims: int, kind: str = "linear"):
        super().__init__()
        if kind not in PROJECTORS:
            raise UserError(f"unknown projector {kind!r}; choose one of {', '.join(PROJECTORS)}")
        self.kind = kind
        self.norm = nn.LayerNorm(in_dims)
        self.fc1 = nn.Linear(in_dims, out_dims)
        if kind == "mlp":
            self.fc2 = nn.Linear(out_dims, out_dims)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.fc1(self.norm(x))
        return self.fc2(gelu(x)) if self.kind == "mlp" else x


class Captioner(nn.Module):
    """Encoder (``.encoder``, a :class:`VisionTransformer`), ``.projector`` and ``.decoder``.

    ``model(pixels, tokens)`` gives next-token logits for teacher forcing; a frozen encoder's
    grid can come from a feature cache instead: ``model(None, tokens, features=grid)``.
    """

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.config = cfg
        self.encoder = VisionTransformer(cfg.vision)
        self.projector = Projector(cfg.vision.hidden_size, cfg.decoder.hidden_size, cfg.projector)
        self.decoder = TextDecoder(cfg.decoder)

    # ----------------------------------------------------------------- forward

    def encode_features(self, pixels: mx.array) -> mx.array:
        """The encoder's raw token grid ``(B, T, D_vision)`` (what a feature cache stores)."""
        return self.encoder(pixels).last_hidden_state

    def project(self, features: mx.array) -> mx.array:
        """Raw encoder grid ``(B, T, D_vision)`` -> image tokens ``(B, T, d)``."""
        return self.projector(features)

    def encode_images(self, pixels: mx.array) -> mx.array:
        """Preprocessed NHWC pixels -> image tokens ``(B, T, d)`` for the decoder."""
        return self.project(self.encode_features(pixels))

    def __call__(
        self,
        pixels: mx.array | None,
        tokens: mx.array,
        image_tokens: mx.array | None = None,
        *,
        features: mx.array | None = None,
        padding_mask: mx.array | None = None,
    ) -> mx.array:
        """Logits ``(B, L, vocab)`` of ``tokens`` (B, L) given the images.

        The image comes from ``image_tokens`` (projected), else ``features`` (raw encoder
        grid), else ``pixels``.
        """
        if image_tokens is None:
            if features is not None:
                image_tokens = self.project(features)
            elif pixels is not None:
                image_tokens = self.encode_images(pixels)
            else:
                raise ValueError("give pixels, features or image_tokens")
        return self.decoder(tokens, image_tokens, padding_mask=padding_mask)

    # ----------------------------------------------------------------- training set-up

    def freeze_encoder(self) -> None:
        """No gradients for any encoder parameter (decoder-only training)."""
        self.encoder.freeze()

    def unfreeze_encoder(self, last_n: int | None = None) -> None:
        """Train the whole encoder (``last_n=None``) or only its last ``last_n`` blocks.

        ``post_layernorm`` is unfrozen with any block. ``visual_projection`` (CLIP's
        contrastive head) stays frozen: nothing on the captioning path uses it.
        """
        n_layers = len(self.encoder.layers)
        if last_n is not None and not 0 <= last_n <= n_layers:
            raise UserError(f"last_n must be between 0 and {n_layers} (encoder blocks)")
        if last_n is None:
            self.encoder.unfreeze()
        else:
            self.encoder.freeze()
            if last_n == 0:
                return
            for layer in self.encoder.layers[n_layers - last_n :]:
                layer.unfreeze()
            self.encoder.post_layernorm.unfreeze()
        if "visual_projection" in self.encoder:
            self.encoder.visual_projection.freeze()
        # CLIP's key biases shift every attention score of a query by the same amount, which
        # softmax ignores: their gradient is zero, and Adam would turn rounding noise into
        # lr-sized random steps. They keep their (pretrained) values.
        for layer in self.encoder.layers:
            layer.self_attn.k_proj.freeze(keys=["bias"], recurse=False)

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter is trainable."""
        return not tree_flatten(self.encoder.trainable_parameters())

    def load_encoder_weights(self, encoder: VisionTransformer) -> None:
        """Copy a (pretrained) encoder's weights into ``self.encoder``; shapes must match."""
        check_weights(self.encoder, dict(tree_flatten(encoder.parameters())), "encoder")
        self.encoder.load_weights(list(tree_flatten(encoder.parameters())))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count (all, or only the trainable ones)."""
        tree = self.trainable_parameters() if trainable_only else self.parameters()
        return sum(v.size for _, v in tree_flatten(tree))


# ----------------------------------------------------------------- weights checks


def check_weights(model: nn.Module, weights: dict[str, mx.array], what: str = "model") -> None:
    """Raise :class:`UserError` unless ``weights`` has exactly ``model``'s keys and shapes."""
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = [
        f"{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:5])})")
    if problems:
        raise UserError(f"{what} weights do not fit its config: " + ", ".join(problems))


# ----------------------------------------------------------------- save


def write_model_files(model: Captioner, tokenizer: Any, folder: str | Path) -> None:
    """Write model.safetensors, config.json and tokenizer.json into an existing ``folder``.

    Not atomic by itself: :func:`save_captioner` (and the training checkpointer) call it on
    a temporary folder and rename that into place.
    """
    folder = Path(folder)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / MODEL_FILE), weights, metadata={"format": "mlx"})
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    tokenizer.save(folder / TOKENIZER_FILE)


def save_captioner(model: Captioner, tokenizer: Any, path: str | Path) -> Path:
    """Save a checkpoint folder atomically: written to a temporary sibling, then renamed
    (an existing folder at ``path`` is replaced only once the new one is complete)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_model_files(model, tokenizer, tmp)
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ----------------------------------------------------------------- load

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint_folder(path_or_hub_id: str | Path) -> Path:
    """A local checkpoint folder, or a hub repo downloaded with ``snapshot_download``."""
    p = Path(path_or_hub_id).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"checkpoint {p} is a file; expected a folder holding {MODEL_FILE}")
        return p
    text = str(path_or_hub_id)
    if not _HUB_ID.match(text):
        raise UserError(f"checkpoint not found: {text}")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=text, allow_patterns=list(CHECKPOINT_FILES))
    except Exception as err:  # offline, no such repo, no access: all the user's to fix
        raise UserError(
            f"checkpoint {text!r} is not a local folder and could not be fetched from the "
            f"Hugging Face hub: {err}"
        ) from err
    return Path(local)


def _read_config(folder: Path) -> CaptionerConfig:
    try:
        data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "decoder" not in data or "vision" not in data:
            raise ValueError("not a captioner config (needs 'vision' and 'decoder')")
        return CaptionerConfig.from_dict(data)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise UserError(f"bad {CONFIG_FILE} in {folder}: {err}") from err


def _read_weights(path: Path) -> dict[str, mx.array]:
    try:
        weights = mx.load(str(path), format="safetensors")
    except Exception as err:  # MLX raises RuntimeError/ValueError for truncated or bad files
        raise UserError(f"corrupt or unreadable {path}: {err}") from err
    if not isinstance(weights, dict):
        raise UserError(f"{path} holds no named tensors")
    return weights


def load_captioner(path_or_hub_id: str | Path) -> tuple[Captioner, Any]:
    """Load ``(Captioner, CaptionTokenizer)`` from a checkpoint folder or hub repo id.

    The model comes back in eval mode. A folder with missing files, an unreadable config,
    corrupt weights, weights that do not fit the config, or a tokenizer larger than the
    decoder's vocabulary is refused with a :class:`UserError` saying why.
    """
    from mlx_caption.tokenizer import CaptionTokenizer

    folder = resolve_checkpoint_folder(path_or_hub_id)
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        hint = ""
        if any(folder.glob("ckpt-*")) or (folder / "best").is_dir():
            hint = " (this looks like a training run: pass one of its ckpt-*/ or best/ folders)"
        raise UserError(
            f"{folder} is not a captioner checkpoint: missing {', '.join(missing)}{hint}"
        )
    cfg = _read_config(folder)
    weights = _read_weights(folder / MODEL_FILE)
    try:
        model = Captioner(cfg)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"cannot build the model of {folder / CONFIG_FILE}: {err}") from err
    check_weights(model, weights, f"{folder / MODEL_FILE}:")
    ref = dict(tree_flatten(model.parameters()))
    model.load_weights([(k, v.astype(ref[k].dtype)) for k, v in weights.items()], strict=True)
    mx.eval(model.parameters())
    model.eval()
    tokenizer = CaptionTokenizer.from_file(folder / TOKENIZER_FILE)
    if tokenizer.vocab_size > cfg.decoder.vocab_size:
        raise UserError(
            f"tokenizer has {tokenizer.vocab_size} ids but the decoder only "
            f"{cfg.decoder.vocab_size}: they do not belong together"
        )
    return model, tokenizer
