"""What only ViT-GPT2 has, beyond the parametrised tests of ``test_captioner_families.py``:
GPT-2's options (its attention scalings, width, activation, no projection when the widths
agree) against transformers, and the config's refusals of the encoder/decoder pairs and
settings we do not read, with generation settings read where transformers reads them."""

import mlx.core as mx
import numpy as np
import pytest
from captioner_fixtures import hf_vit_gpt2_config, save_hf_captioner
from prerequisites import require_module

from mlx_caption import loading as conv
from mlx_caption.models.vit_gpt2 import VitGpt2Config

require_module("torch", "the [torch] extra")
reference = pytest.importorskip("mlx_caption.models.vit_gpt2.reference")


@pytest.mark.parametrize(
    "options",
    [
        {"hidden_size": 32},  # the same widths: no enc_to_dec_proj
        {"scale_attn_by_inverse_layer_idx": True, "reorder_and_upcast_attn": True},
        {"scale_attn_weights": False, "n_inner": 40, "activation_function": "gelu"},
    ],
)
def test_gpt2_options_match_transformers(tmp_path, options):
    folder = save_hf_captioner(tmp_path / "hf", "vit_gpt2", image_size=32, **options)
    model, tokenizer = conv.load_captioner(folder)
    assert model.config.projects == ("hidden_size" not in options)
    assert ("enc_to_dec_proj" in model) == model.config.projects
    hf = reference.load_model(folder)
    pixels = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    end = model.decoder.special_tokens.end
    ids = np.array([[end, *tokenizer.encode_text("two cats near a red car")]] * 2)
    ours = np.array(model(model.encode(mx.array(pixels)), mx.array(ids)))
    np.testing.assert_allclose(ours, reference.logits(hf, pixels, ids), atol=1e-4)


def test_config_refusals_name_what_is_not_supported():
    config = hf_vit_gpt2_config(100).to_dict()
    with pytest.raises(ValueError, match="encoder 'deit' and decoder 'gpt2'"):
        VitGpt2Config.from_hf({**config, "encoder": {**config["encoder"], "model_type": "deit"}})
    with pytest.raises(ValueError, match="encoder 'vit' and decoder 'bert'"):
        VitGpt2Config.from_hf({**config, "decoder": {**config["decoder"], "model_type": "bert"}})
    untied = {**config, "decoder": {**config["decoder"], "tie_word_embeddings": False}}
    with pytest.raises(ValueError, match="untied"):
        VitGpt2Config.from_hf(untied)
    generation = {"decoder_start_token_id": 3, "eos_token_id": [7], "max_new_tokens": 12}
    cfg = VitGpt2Config.from_hf(config, generation=generation)
    assert (cfg.text.decoder_start_token_id, cfg.text.eos_token_id) == (3, 7)
    assert cfg.max_new_tokens == 12 and cfg.text.pad_token_id == 7  # pad: eos, as transformers
    assert not cfg.length_counts_prompt
    # No generation_config.json: config.json's settings, the decoder's filling the gaps.
    cfg = VitGpt2Config.from_hf({**config, "max_length": 16, "decoder_start_token_id": None})
    assert cfg.max_new_tokens == 15 and cfg.length_counts_prompt  # the start token counts
    assert cfg.text.decoder_start_token_id == config["decoder"]["bos_token_id"]
    with pytest.raises(ValueError, match="only one end token"):
        VitGpt2Config.from_hf(config, generation={"bos_token_id": 3, "eos_token_id": [7, 8]})
