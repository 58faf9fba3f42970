"""The PyTorch twin behind `bench`'s training race computes what the MLX captioner computes."""

import dataclasses

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from prerequisites import require_module

from mlx_caption.bench import scripts
from mlx_caption.bench.encoder import TINY
from mlx_caption.bench.models import TINY_DECODER, build_captioner
from mlx_caption.tokens import NO_TOKEN
from mlx_caption.train.step import caption_loss, teacher_forced

require_module("torch", "torch (the [torch] extra)")
require_module("transformers", "transformers (the [torch] extra)")

import torch  # noqa: E402

twin_mod = scripts.load_script("torch_twin")


def _batch(model, batch=3, length=9, seed=0):
    rng = np.random.default_rng(seed)
    size = model.config.vision.image_size
    pixels = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    tokens = rng.integers(4, model.config.decoder.vocab_size, (batch, length)).astype(np.int32)
    tokens[:, 0], tokens[1, 6:] = 1, NO_TOKEN  # <start>; the second caption is padded
    return pixels, tokens


def _mlx_loss_and_grads(model, images, tokens, from_features):
    def loss_fn(m):
        logits, targets = teacher_forced(
            m, mx.array(images), mx.array(tokens), from_features=from_features
        )
        total, count, _ = caption_loss(logits, targets, 0.1)
        return total / count

    loss, grads = nn.value_and_grad(model, loss_fn)(model)
    return loss.item(), dict(tree_flatten(grads))


@pytest.mark.parametrize("finetune", [False, True])
def test_twin_computes_the_same_loss_and_gradients(finetune):
    model, bridge = build_captioner(TINY, TINY_DECODER, vocab_size=TINY_DECODER.vocab_size)
    model.train()
    pixels, tokens = _batch(model)
    if finetune:
        model.unfreeze_encoder()
        encoder = bridge.bridge.model
        images = pixels
    else:
        model.freeze_encoder()
        encoder = None
        model.eval()
        images = np.array(model.encode_features(mx.array(pixels)))
        model.train()
    twin = twin_mod.build(model, encoder).train()
    loss, grads = _mlx_loss_and_grads(model, images, tokens, from_features=not finetune)

    t_tokens = torch.from_numpy(tokens).long()
    inputs = t_tokens[:, :-1].clamp_min(0)  # padded inputs are some id, as in the MLX step
    twin_loss = twin_mod.caption_loss(twin(torch.from_numpy(images), inputs), t_tokens[:, 1:], 0.1)
    twin_loss.backward()
    assert twin_loss.item() == pytest.approx(loss, rel=1e-5)
    named = dict(twin.named_parameters())
    names = ["decoder.output_bias", "decoder.layers.0.mlp.fc1.weight", "projector.fc1.weight"]
    names += ["decoder.embed_tokens.weight"]
    for name in names:
        np.testing.assert_allclose(
            named[name].grad.numpy(), np.array(grads[name]), atol=2e-5, rtol=1e-3, err_msg=name
        )
    if finetune:  # the last encoder block's MLP (its weights are the bridge's, by HF name)
        mlx_name = "encoder.encoder.layers.1.mlp.fc2.weight"
        torch_grad = next(
            p.grad
            for n, p in twin.named_parameters()
            if n.endswith("layers.1.mlp.fc2.weight") and n.startswith("encoder.")
        )
        np.testing.assert_allclose(
            torch_grad.numpy(), np.array(grads[mlx_name]), atol=2e-5, rtol=1e-3
        )


def test_twin_step_trains():
    model, _ = build_captioner(TINY, TINY_DECODER, vocab_size=TINY_DECODER.vocab_size, bridge=False)
    model.eval()
    pixels, tokens = _batch(model, batch=4)
    grids = np.array(model.encode_features(mx.array(pixels)))
    step = twin_mod.TrainStep(twin_mod.build(model), lr=3e-3, label_smoothing=0.1)
    losses = [step(grids, tokens) for _ in range(8)]
    assert losses[-1] < losses[0]


def test_twin_refuses_what_it_does_not_cover():
    model, _ = build_captioner(TINY, TINY_DECODER, vocab_size=TINY_DECODER.vocab_size, bridge=False)
    untied = dataclasses.replace(model.config.decoder, tie_embeddings=False)
    with pytest.raises(ValueError, match="tied"):
        twin_mod.Captioner(dataclasses.replace(model.config, decoder=untied))
