"""A PyTorch twin of mlx-caption's captioner and training step, for `bench`'s training section.

The same projector (LayerNorm + Linear), the same pre-LN decoder (causal self-attention,
cross-attention to the image tokens, tanh-GELU MLP, final LayerNorm, output head tied to the
token embedding plus a bias), the same parameter names and the same loss (cross-entropy summed
over non-pad targets with label smoothing, divided by their count), trained with torch's
AdamW. For fine-tuning, the encoder is the family's transformers model (its ``reference``
module) in training mode. ``load_mlx_weights`` copies an MLX captioner's weights in, so both
sides start from the same numbers (``tests/test_torch_twin.py`` checks the loss agrees).

torch's best CPU path: SDPA attention, ``torch.set_num_threads`` (the caller's), AdamW with
``fused=True``, and optionally ``torch.compile`` of the loss and its backward pass.
``mlx_caption.bench.train`` loads this file from a source checkout, like ``bench_data.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NO_TOKEN = -1  # mlx_caption.tokens.NO_TOKEN: padding (this file imports nothing from the package)


class Attention(nn.Module):
    """q/k/v/out projections (no key bias, as the MLX decoder) and SDPA."""

    def __init__(self, dims: int, heads: int, kv_dims: int | None = None):
        super().__init__()
        kv_dims = kv_dims or dims
        self.heads = heads
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(kv_dims, dims, bias=False)
        self.v_proj = nn.Linear(kv_dims, dims)
        self.out_proj = nn.Linear(dims, dims)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, source: torch.Tensor, causal: bool) -> torch.Tensor:
        q, k, v = (
            self.split(self.q_proj(x)),
            self.split(self.k_proj(source)),
            self.split(self.v_proj(source)),
        )
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden)
        self.fc2 = nn.Linear(hidden, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DecoderBlock(nn.Module):
    def __init__(self, dims: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(dims, eps=eps)
        self.self_attn = Attention(dims, heads)
        self.cross_attn_layer_norm = nn.LayerNorm(dims, eps=eps)
        self.cross_attn = Attention(dims, heads)
        self.final_layer_norm = nn.LayerNorm(dims, eps=eps)
        self.mlp = MLP(dims, hidden)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = self.self_attn_layer_norm(x)
        x = x + self.self_attn(h, h, causal=True)
        x = x + self.cross_attn(self.cross_attn_layer_norm(x), image, causal=False)
        return x + self.mlp(self.final_layer_norm(x))


class TextDecoder(nn.Module):
    """The MLX ``TextDecoder`` with ``tie_embeddings=True`` and no dropout."""

    def __init__(self, cfg: Any):
        super().__init__()
        d = cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d)
        self.embed_positions = nn.Embedding(cfg.max_length, d)
        self.layers = nn.ModuleList(
            DecoderBlock(d, cfg.num_heads, cfg.intermediate_size, cfg.layer_norm_eps)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1])
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        for layer in self.layers:
            x = layer(x, image)
        return F.linear(self.norm(x), self.embed_tokens.weight, self.output_bias)


class Projector(nn.Module):
    def __init__(self, in_dims: int, out_dims: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dims)
        self.fc1 = nn.Linear(in_dims, out_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.norm(x))


class Captioner(nn.Module):
    """Projector + decoder, and the encoder when it is trained too (``encoder`` given)."""

    def __init__(self, config: Any, encoder: nn.Module | None = None):
        super().__init__()
        if config.projector != "linear" or not config.decoder.tie_embeddings:
            raise ValueError("the twin covers the linear projector and a tied output head")
        self.projector = Projector(config.vision.hidden_size, config.decoder.hidden_size)
        self.decoder = TextDecoder(config.decoder)
        self.encoder = encoder

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of ``tokens`` given encoder grids ``(B, T, D)``, or NHWC pixels with an encoder."""
        if self.encoder is not None:
            images = self.encoder(pixel_values=images.permute(0, 3, 1, 2)).last_hidden_state
        return self.decoder(tokens, self.projector(images))


def caption_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over the real targets (not ``NO_TOKEN``: the MLX
    step's loss)."""
    real = targets.flatten() != NO_TOKEN
    ce = F.cross_entropy(
        logits.flatten(0, 1),
        targets.flatten().clamp_min(0),  # any id at a padded position: masked out below
        reduction="none",
        label_smoothing=label_smoothing,
    )
    mask = real.to(ce.dtype)
    return (ce * mask).sum() / mask.sum().clamp_min(1.0)


def build(mlx_model: Any, encoder: nn.Module | None = None, device: str = "cpu") -> Captioner:
    """The twin of an MLX ``Captioner`` with its weights (and ``encoder``, already loaded), on
    ``device``."""
    twin = Captioner(mlx_model.config, encoder)
    load_mlx_weights(twin, mlx_model)
    return twin.to(device)


def load_mlx_weights(twin: Captioner, mlx_model: Any) -> None:
    """Copy the MLX projector and decoder weights (same names, same layouts)."""
    from mlx.utils import tree_flatten

    weights = {k: np.array(v) for k, v in tree_flatten(mlx_model.parameters())}
    state = {}
    for name in twin.state_dict():
        if name.startswith("encoder."):
            continue
        if name not in weights:
            raise ValueError(f"the MLX captioner has no weight {name!r}")
        state[name] = torch.from_numpy(weights[name])
    missing = twin.load_state_dict(state, strict=False).missing_keys
    if any(not k.startswith("encoder.") for k in missing):
        raise ValueError(f"weights not loaded: {missing}")


class TrainStep:
    """One AdamW update of the twin: forward, loss, backward, step; ``compile`` runs the
    forward pass and the loss through ``torch.compile`` (AOTAutograd compiles the backward)."""

    def __init__(
        self,
        twin: Captioner,
        *,
        lr: float = 1e-4,
        label_smoothing: float = 0.0,
        compile: bool = False,
    ):
        self.twin = twin.train()
        params = [p for p in twin.parameters() if p.requires_grad]
        try:
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)
        except (RuntimeError, TypeError):  # a torch without fused AdamW on this device
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        self.label_smoothing = label_smoothing
        self._loss = torch.compile(self.loss) if compile else self.loss

    def loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch (``tokens`` with their start and end tokens)."""
        inputs = tokens[:, :-1].clamp_min(0)  # a padded input is some id: its target is masked
        return caption_loss(self.twin(images, inputs), tokens[:, 1:], self.label_smoothing)

    def __call__(
        self, images: np.ndarray | torch.Tensor, tokens: np.ndarray | torch.Tensor
    ) -> float:
        device = next(self.twin.parameters()).device
        images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
        tokens = (
            torch.as_tensor(np.asarray(tokens)).long() if not torch.is_tensor(tokens) else tokens
        )
        images, tokens = images.to(device), tokens.to(device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(images, tokens)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
