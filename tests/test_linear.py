"""Linear: values and gradients against float64 NumPy, and every gradient in its weight's layout."""

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)

# isort: split
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_caption.models.layers.linear import Linear, linear


def _row_major(a: mx.array) -> bool:
    """Whether ``a`` is laid out row by row (the buffer protocol gives MLX's real strides)."""
    mx.eval(a)
    view = memoryview(a)
    expected, step = [], view.itemsize
    for size in reversed(view.shape):
        expected.insert(0, step)
        step *= size
    return list(view.strides) == expected


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(6,), (9, 6), (2, 5, 6)])
def test_values_and_gradients_match_float64(shape, bias, compiled):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((7, shape[-1])).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    dy = rng.standard_normal((*shape[:-1], 7)).astype(np.float32)

    def loss(x, w, b):
        return (linear(x, w, b if bias else None) * mx.array(dy)).sum()

    grad = mx.grad(loss, argnums=(0, 1, 2))
    forward = lambda x, w, b: linear(x, w, b if bias else None)  # noqa: E731
    if compiled:
        grad, forward = mx.compile(grad), mx.compile(forward)
    args = (mx.array(x), mx.array(w), mx.array(b))
    y, (dx, dw, db) = forward(*args), grad(*args)

    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    rows, dy_rows = x64.reshape(-1, shape[-1]), dy64.reshape(-1, 7)
    want_y = x64 @ w64.T + (b if bias else 0.0)
    np.testing.assert_allclose(np.array(y), want_y, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.array(dx), dy64 @ w64, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.array(dw), dy_rows.T @ rows, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.array(db), dy_rows.sum(0) if bias else 0.0, atol=1e-5)


def test_layer_matches_nn_linear_and_its_gradients_are_row_major():
    mx.random.seed(0)
    ours, theirs = Linear(12, 20), nn.Linear(12, 20)
    theirs.update(ours.parameters())
    x = mx.random.normal((3, 4, 12))

    def loss(model, x):
        return (model(x) ** 2).sum()

    got = nn.value_and_grad(ours, loss)(ours, x)
    want = nn.value_and_grad(theirs, loss)(theirs, x)
    np.testing.assert_allclose(np.array(got[0]), np.array(want[0]), rtol=1e-5)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(
            np.array(got[1][name]), np.array(want[1][name]), rtol=1e-4, atol=1e-4
        )
    # The point of the layer: nn.Linear's weight gradient is a transposed view.
    assert _row_major(got[1]["weight"])
    assert not _row_major(want[1]["weight"])


def test_captioner_gradients_are_row_major():
    """Every trainable weight of a captioner (the tied head's embedding included: its lookup
    gradient and the head's gradient are added) gets its gradient in its own layout."""
    from mlx_caption.bench.encoder import TINY
    from mlx_caption.bench.models import TINY_DECODER, build_captioner
    from mlx_caption.train.step import teacher_forced

    model, _ = build_captioner(TINY, TINY_DECODER, vocab_size=TINY_DECODER.vocab_size, bridge=False)
    model.train()
    model.freeze_encoder()
    grids = mx.random.normal((2, TINY.num_tokens, TINY.hidden_size))
    tokens = mx.array(np.random.default_rng(0).integers(0, 64, (2, 9)), mx.int32)

    def loss(model):
        logits, targets = teacher_forced(model, grids, tokens, from_features=True)
        return nn.losses.cross_entropy(logits, targets).mean()

    _, grads = nn.value_and_grad(model, loss)(model)
    matrices = {k: g for k, g in tree_flatten(grads) if g.ndim == 2}
    assert "decoder.embed_tokens.weight" in matrices and len(matrices) > 10
    assert [k for k, g in matrices.items() if not _row_major(g)] == []


def test_tied_output_heads_give_row_major_embedding_gradients():
    """The heads tied to an embedding (our decoder's, GPT-2's) add their gradient to the
    lookup's: given in the embedding's layout, not as a transposed view."""
    from mlx_caption.bench.models import TINY_DECODER, TINY_VIT_GPT2
    from mlx_caption.models.decoder import TextDecoder
    from mlx_caption.models.registry import FAMILIES

    decoder = TextDecoder(TINY_DECODER)
    gpt2 = FAMILIES["vit_gpt2"].model_class(TINY_VIT_GPT2).decoder
    hidden = mx.random.normal((2, 5, TINY_DECODER.hidden_size))
    for model, head, embedding in (
        (decoder, lambda m: m.logits(hidden), "embed_tokens"),
        (gpt2, lambda m: m.head(hidden), "transformer.wte"),
    ):
        _, grads = nn.value_and_grad(model, lambda m, head=head: (head(m) ** 2).sum())(model)
        weight = dict(tree_flatten(grads))[f"{embedding}.weight"]
        assert _row_major(weight), embedding


def test_every_model_family_uses_it():
    """No family builds a plain nn.Linear (its weight gradients would come out transposed)."""
    from mlx_caption.bench.encoder import TINY
    from mlx_caption.bench.models import TINY_BLIP, TINY_DECODER, TINY_GIT, TINY_VIT_GPT2
    from mlx_caption.models.captioner import Captioner, CaptionerConfig
    from mlx_caption.models.dinov2 import Dinov2Config
    from mlx_caption.models.registry import FAMILIES, build_encoder
    from mlx_caption.models.siglip import SiglipVisionConfig
    from mlx_caption.models.vit import ViTConfig

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    models = [
        Captioner(CaptionerConfig(vision=TINY, decoder=TINY_DECODER)),
        build_encoder(SiglipVisionConfig(**small, intermediate_size=64)),
        build_encoder(Dinov2Config(**small)),
        build_encoder(ViTConfig(**small, intermediate_size=64)),
        *(FAMILIES[name].model_class(cfg) for name, cfg in
          (("blip", TINY_BLIP), ("git", TINY_GIT), ("vit_gpt2", TINY_VIT_GPT2))),
    ]  # fmt: skip
    for model in models:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert linears, type(model).__name__
        assert all(type(m) is Linear for m in linears), type(model).__name__
