"""One image's tokens split over CPU streams (split_eval at batch 1): the same values as the
blocks run whole, for every encoder family's block, and only where it is meant to run."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map

import mlx_caption.models.base as base
from mlx_caption import backend
from mlx_caption.models.blip.config import BlipVisionConfig
from mlx_caption.models.blip.vision import BlipVisionModel
from mlx_caption.models.clip import CLIPVisionConfig
from mlx_caption.models.dinov2.config import Dinov2Config
from mlx_caption.models.layers.blocks import worth_splitting_tokens
from mlx_caption.models.registry import build_encoder
from mlx_caption.models.siglip.config import SiglipVisionConfig
from mlx_caption.models.vit.config import ViTConfig

# 32 px in 8-px patches: 16 patch tokens (17 with a class token), 32 wide: enough tokens for
# the width to split them.
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32}
CONFIGS = {
    "clip": CLIPVisionConfig(**TINY, patch_size=8, intermediate_size=64),
    "siglip": SiglipVisionConfig(**TINY, patch_size=8, intermediate_size=64),
    "blip": BlipVisionConfig(**TINY, patch_size=8, intermediate_size=64),
    "vit": ViTConfig(**TINY, patch_size=8, intermediate_size=64),
    "dinov2": Dinov2Config(**TINY, patch_size=8, layerscale_value=0.5),
}


def _model(family: str):
    cfg = CONFIGS[family]
    model = BlipVisionModel(cfg) if family == "blip" else build_encoder(cfg)  # BLIP's: no family
    model.eval()
    # Non-trivial norms and biases, so a block half applied to the wrong tokens shows.
    keys = iter(mx.random.split(mx.random.key(1), 1000))
    shifted = tree_map(
        lambda p: p + 0.1 * mx.random.normal(p.shape, key=next(keys)), model.parameters()
    )
    model.update(shifted)
    return model


def _spy(monkeypatch) -> list:
    calls = []
    real = base.blocks_over_token_streams

    def spy(layers, x, streams, hidden=None):
        calls.append((x.shape, len(streams)))
        return real(layers, x, streams, hidden)

    monkeypatch.setattr(base, "blocks_over_token_streams", spy)
    return calls


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_one_image_split_by_tokens_equals_the_blocks_run_whole(family, monkeypatch):
    model = _model(family)
    pixels = mx.random.normal((1, 32, 32, 3), key=mx.random.key(0))
    calls = _spy(monkeypatch)
    queued = []
    async_eval = mx.async_eval
    monkeypatch.setattr(
        mx, "async_eval", lambda arrays: queued.append(arrays) or async_eval(arrays)
    )
    threads = backend.blas_thread_count()

    def run(p):
        out = model(p, output_hidden_states=True)
        return out.last_hidden_state, *out.hidden_states

    split = backend.split_eval(run, pixels, parts=2)
    assert [shape[0] for shape, _ in calls] == [1] and calls[0][1] == 2
    tokens = calls[0][0][1]
    # Per block: both shares' keys and values, then both shares' outputs; the shares are the
    # tokens cut in two (an odd count: one more in the second).
    assert len(queued) == 2 * TINY["num_hidden_layers"]
    kv, outs = queued[0], queued[1]
    assert [a.shape[2] for a in kv] == [tokens // 2] * 2 + [tokens - tokens // 2] * 2
    assert [a.shape[1] for a in outs] == [tokens // 2, tokens - tokens // 2]
    assert backend.blas_thread_count() == threads

    whole = run(pixels)
    assert len(split) == len(whole) == 2 + TINY["num_hidden_layers"]
    for a, b in zip(split, whole, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


def test_tokens_are_split_only_for_one_image_and_enough_tokens_for_the_width(monkeypatch):
    calls = _spy(monkeypatch)
    model = _model("clip")
    pixels = mx.random.normal((2, 32, 32, 3), key=mx.random.key(0))
    encode = lambda p: model(p).last_hidden_state  # noqa: E731

    encode(pixels[:1])  # outside split_eval
    backend.split_eval(encode, pixels, parts=2)  # two images: the batch is split instead
    backend.split_eval(encode, pixels[:1], parts=1)  # one stream
    assert calls == [] and backend.token_streams() is None

    # 16 px: 5 tokens, too few for 32 wide.
    assert not worth_splitting_tokens(mx.zeros((1, 5, 32)))
    assert worth_splitting_tokens(mx.zeros((1, 17, 32)))
    small = mx.random.normal((1, 16, 16, 3), key=mx.random.key(0))
    out = backend.split_eval(encode, small, parts=2)
    assert calls == []
    np.testing.assert_allclose(np.array(out), np.array(encode(small)), atol=1e-6)


def test_training_never_splits_tokens(monkeypatch):
    """A model in training mode runs its blocks whole, even inside split_eval's context (the
    split path is evaluated eagerly and is not for differentiating)."""
    calls = _spy(monkeypatch)
    model = _model("vit")
    model.train()
    pixels = mx.random.normal((1, 32, 32, 3), key=mx.random.key(0))
    token = backend._TOKEN_STREAMS.set(backend.cpu_streams(2))
    try:
        loss, grads = mx.value_and_grad(lambda p: model(p).last_hidden_state.sum())(pixels)
        mx.eval(loss, grads)
    finally:
        backend._TOKEN_STREAMS.reset(token)
    assert calls == []


def test_split_eval_runs_on_any_thread():
    """MLX's streams belong to the thread that made them: split_eval on another thread (the
    web page captions on streamlit's) uses that thread's own, after the main thread's exist."""
    import threading

    model = _model("dinov2")
    pixels = mx.random.normal((2, 32, 32, 3), key=mx.random.key(0))
    encode = lambda p: model(p).last_hidden_state  # noqa: E731
    here = [backend.split_eval(encode, pixels[:n], parts=2) for n in (1, 2)]
    there, errors = [], []

    def work():
        try:
            there.extend(backend.split_eval(encode, pixels[:n], parts=2) for n in (1, 2))
        except Exception as err:  # reported below, with the thread's error
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors, errors
    for a, b in zip(there, here, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)
