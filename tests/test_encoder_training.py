"""A captioner learns to look with each new family's tiny encoder, frozen (features cached)
and fine-tuned (with gradient checkpointing): it beats the image-blind caption on the
synthetic set. Also which encoder parameters each family trains."""

import mlx.core as mx  # noqa: I001
import mlx.nn as nn
import numpy as np
import pytest
from encoder_fixtures import save_hf_encoder
from mlx.utils import tree_flatten
from prerequisites import require_module

import mlx_caption  # noqa: F401  (before mlx.core)
from mlx_caption.data.synthetic import blind_baseline_caption, load_scenes, score_objects
from mlx_caption.loading import load_captioner, load_encoder
from mlx_caption.metrics import score_captions
from mlx_caption.models.captioner import Captioner, CaptionerConfig
from mlx_caption.models.decoder import DecoderConfig
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.trainer import Trainer

require_module("transformers", "transformers (the [torch] extra)")

FAMILIES = ("siglip", "dinov2", "vit")
TINY_ENCODER = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_attention_heads": 2}


def weights(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def recipe(encoder, mode: str, cache) -> dict:
    """100 steps of 32 synthetic 32-px images; one evaluation at the end."""
    return {
        "model": {
            "encoder": str(encoder),
            "encoder_mode": mode,
            "grad_checkpoint": True,
            "image_size": 32,  # DINOv2's processor would crop 224 px otherwise
            "decoder": {
                "hidden_size": 64,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 128,
                "dropout": 0.0,
            },
        },  # fmt: skip
        "data": {
            "synthetic": {"images": 400, "size": 32, "seed": 0},
            "vocab_size": 400,
            "feature_cache": str(cache),
        },
        "optim": {"lr": 6e-3, "encoder_lr": 1e-3, "warmup_steps": 10, "min_lr_ratio": 0.1},
        "eval": {
            "batch_size": 40,
            "val_images": 40,
            "metrics_tokenizer": "python",
            "metrics": ["CIDEr"],
            "every_steps": 1000,
        },  # fmt: skip
        "checkpoint": {"every_steps": 1000},
        "epochs": 12,
        "batch_size": 32,
        "label_smoothing": 0.0,
        "log_every": 50,
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["frozen", "finetune"])
@pytest.mark.parametrize("family", FAMILIES)
def test_captioner_learns_to_look_with_each_family(family, mode, tmp_path):
    encoder = save_hf_encoder(tmp_path / "encoder", family, seed=0, processor={}, **TINY_ENCODER)
    pretrained = weights(load_encoder(encoder))
    cfg = TrainConfig.from_dict(recipe(encoder, mode, tmp_path / "cache"))
    trainer = Trainer.from_recipe(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    result = trainer.fit()
    assert result.status == "finished" and trainer.model.config.vision.input_size == 32

    data = trainer.data
    refs = {r.id: r.captions for r in data.val}
    blind = blind_baseline_caption(c for r in data.train for c in r.captions)
    blind_cider = score_captions(refs, dict.fromkeys(refs, blind), tokenizer="python")["CIDEr"]
    dataset = next((tmp_path / "run" / "data").glob("*/dataset_synthetic.json"))
    scenes = {str(k): v for k, v in load_scenes(dataset).items()}
    blind_pairs = score_objects(dict.fromkeys(refs, blind), scenes)["pair_f1"]
    last = result.last_eval
    print(
        f"\n{family} {mode}: CIDEr {last['CIDEr']:.3f} (blind {blind_cider:.3f}), "
        f"pair_f1 {last['pair_f1']:.3f} (blind {blind_pairs:.3f})"
    )
    assert last["CIDEr"] > blind_cider
    assert last["pair_f1"] > blind_pairs + 0.03  # it names colours and shapes it sees

    # The captioner checkpoint holds the family's encoder config (at its input size) and loads.
    loaded, _ = load_captioner(result.checkpoint)
    assert loaded.config.vision == trainer.model.config.vision
    assert type(loaded.encoder) is type(trainer.model.encoder)

    after = weights(trainer.model.encoder)
    moved = {k for k in pretrained if not np.array_equal(pretrained[k], after[k])}
    if mode == "frozen":  # never ran in the step: its grids came from the feature cache
        assert not moved
        assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2  # train + val
    else:
        assert moved == set(pretrained) - set(frozen_paths(trainer.model.encoder, pretrained))


def frozen_paths(encoder, names) -> list[str]:
    """The parameters of ``names`` under the encoder's ``never_trained`` paths."""
    return [k for k in names for p in encoder.never_trained if k == p or k.startswith(p + ".")]


@pytest.mark.parametrize("family", FAMILIES)
def test_last_n_blocks_and_what_never_trains(family, tmp_path):
    encoder = load_encoder(save_hf_encoder(tmp_path / "e", family, **TINY_ENCODER))
    decoder = DecoderConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=2,
                            intermediate_size=64, max_length=12)  # fmt: skip
    model = Captioner(CaptionerConfig(vision=encoder.config, decoder=decoder))
    model.load_encoder_weights(encoder)
    model.unfreeze_encoder(last_n=1)
    trainable = {k for k, _ in tree_flatten(model.encoder.trainable_parameters())}
    blocks = {"siglip": "encoder.layers.", "dinov2": "encoder.layer.", "vit": "encoder.layer."}
    last = blocks[family] + "1."
    after = model.encoder.after_blocks[0]
    assert any(k.startswith(last) for k in trainable)
    assert all(k.startswith((last, after + ".")) for k in trainable)
    assert not any(k.startswith(tuple(model.encoder.never_trained)) for k in trainable)
    key_bias = {"siglip": "self_attn.k_proj.bias", "dinov2": "attention.attention.key.bias",
                "vit": "attention.attention.key.bias"}[family]  # fmt: skip
    assert last + key_bias not in trainable  # softmax ignores it: its gradient is zero
    model.unfreeze_encoder()
    trainable = {k for k, _ in tree_flatten(model.encoder.trainable_parameters())}
    heads = {"siglip": "head.", "dinov2": None, "vit": "pooler."}[family]
    assert heads is None or not any(k.startswith(heads) for k in trainable)
    table = {"siglip": "embeddings.position_embedding.weight"}.get(
        family, "embeddings.position_embeddings"
    )
    assert table in trainable
    # Gradients reach the resized position table when the input grid differs.
    model.train()
    pixels = mx.random.normal((2, 48, 48, 3))
    tokens = mx.array([[1, 5, 6, 2], [1, 7, 2, 0]])

    def loss(m):
        return m(m.encode(pixels), tokens).square().mean()

    _, grads = nn.value_and_grad(model, loss)(model)
    grads = dict(tree_flatten(grads))
    table = next(k for k in grads if "position_embedding" in k)
    assert float(mx.abs(grads[table]).sum()) > 0
