"""What only GIT has, beyond the parametrised tests of ``test_captioner_families.py``: the
image prefix's keys/values attended in one softmax with the cached text's, and the config's
refusals of what GIT checkpoints we do not read (a bare model, video, tied embeddings)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from prerequisites import require_module

from mlx_caption.models.git import GitConfig
from mlx_caption.models.layers import attend_prefixed, causal_mask

require_module("torch", "the [torch] extra")
reference = pytest.importorskip("mlx_caption.models.git.reference")


def test_prefixed_attention_is_one_softmax_over_image_and_text():
    """``attend_prefixed`` (grouped image rows, masked text) equals plain attention over the
    image's keys/values copied per row, concatenated with the text's."""
    rng = np.random.default_rng(0)
    images, groups, heads, length, t, d = 2, 3, 2, 4, 5, 8
    rows = images * groups

    def arr(*shape):
        return mx.array(rng.standard_normal(shape).astype(np.float32))

    q, k, v = arr(rows, heads, length, d), arr(rows, heads, 6, d), arr(rows, heads, 6, d)
    pk, pv = arr(images, heads, t, d), arr(images, heads, t, d)
    mask = causal_mask(length, 6, 2)
    out, weights = attend_prefixed(q, (pk, pv), k, v, 0.3, mask, return_weights=True)
    keys = mx.concatenate([mx.repeat(pk, groups, axis=0), k], axis=2)
    values = mx.concatenate([mx.repeat(pv, groups, axis=0), v], axis=2)
    full_mask = mx.concatenate([mx.ones((length, t), dtype=mx.bool_), mask], axis=1)
    scores = mx.where(full_mask, (q * 0.3) @ keys.swapaxes(-1, -2), -mx.inf)
    want = mx.softmax(scores, axis=-1)
    np.testing.assert_allclose(np.array(out), np.array(want @ values), atol=1e-5)
    np.testing.assert_allclose(np.array(weights), np.array(want[..., :t]), atol=1e-5)


def test_config_refusals():
    hf = json.loads(reference.hf_config(GitConfig()).to_json_string())
    with pytest.raises(ValueError, match="GitModel"):
        GitConfig.from_hf({**hf, "architectures": ["GitModel"]})
    with pytest.raises(ValueError, match="video"):
        GitConfig.from_hf({**hf, "num_image_with_embedding": 6})
    with pytest.raises(ValueError, match="tied"):
        GitConfig.from_hf({**hf, "tie_word_embeddings": True})
    cfg = GitConfig.from_hf(hf, None, {"max_length": 50, "eos_token_id": [102]})
    assert cfg.max_new_tokens == 49 and cfg.text.eos_token_id == 102
    assert cfg.length_counts_prompt  # transformers' max_length counts a prompt too
    # No generation_config.json: config.json's settings, as transformers reads them.
    assert GitConfig.from_hf({**hf, "max_length": 30}).max_new_tokens == 29
    assert cfg.vision.num_tokens == 197 and cfg.text.num_hidden_layers == 6
    assert GitConfig.from_dict(cfg.to_dict()) == cfg
