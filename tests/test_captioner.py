"""Captioner: forward paths, freezing, save/load round trip, refusals, caption API and CLI."""

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)

# isort: split
import json
import os
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from app_fixtures import synthetic_images, tiny_checkpoint
from mlx.utils import tree_flatten
from PIL import Image

from mlx_caption.cli import main
from mlx_caption.data.preprocess import PreprocessConfig, preprocess_paths
from mlx_caption.errors import UserError
from mlx_caption.generate import DecodingConfig, caption, decode, generate
from mlx_caption.loading import load_captioner, save_captioner, write_model_files
from mlx_caption.models.captioner import Captioner, CaptionerConfig
from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
from mlx_caption.models.decoder import DecoderConfig
from mlx_caption.tokenizer import CaptionTokenizer

CAPTIONS = [
    "a red circle on the left",
    "two blue squares at the top",
    "a small green triangle",
    "one big yellow circle in the middle",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.train(CAPTIONS, vocab_size=300)


def _config(vocab, projector="linear", projection_dim=None, layers=3, stem="patch"):
    vision = VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=projection_dim,
        stem=stem,
        preprocess=PreprocessConfig(resize_shortest_edge=32, crop_size=32),
    )
    decoder = DecoderConfig(
        vocab_size=vocab,
        hidden_size=24,
        num_layers=2,
        num_heads=4,
        intermediate_size=48,
        max_length=10,
    )
    return CaptionerConfig(vision=vision, decoder=decoder, encoder_name="tiny", projector=projector)


def _model(tokenizer, seed=0, **kw):
    mx.random.seed(seed)
    model = Captioner(_config(tokenizer.vocab_size, **kw))
    model.eval()
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("ckpt") / "captioner"
    save_captioner(_model(tokenizer, seed=4), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 32), (32, 50), (64, 64)]):
        arr = rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


def _tokens(batch=2):
    return mx.array([[1, 10, 11, 12, 2]] * batch)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_forward_paths_agree(tokenizer, projector):
    model = _model(tokenizer, projector=projector)
    pixels = mx.random.normal((2, 32, 32, 3))
    grid = model.encode_features(pixels)
    assert grid.shape == (2, 5, 32)  # class token + 2x2 patches, vision width
    image_tokens = model.encode(pixels)
    assert image_tokens.shape == (2, 5, 24)  # decoder width
    np.testing.assert_allclose(np.array(model.project(grid)), np.array(image_tokens), atol=1e-6)
    logits = np.array(model(image_tokens, _tokens()))
    assert logits.shape == (2, 5, tokenizer.vocab_size)
    np.testing.assert_allclose(np.array(model(model.project(grid), _tokens())), logits, atol=1e-5)
    direct = model.decoder(_tokens(), image_tokens)
    np.testing.assert_allclose(np.array(direct), logits, atol=1e-6)
    keys = {k for k, _ in tree_flatten(model.parameters()) if k.startswith("projector.")}
    expected = {"projector.norm.weight", "projector.norm.bias", "projector.fc1.weight"}
    expected |= {"projector.fc1.bias"}
    if projector == "mlp":
        expected |= {"projector.fc2.weight", "projector.fc2.bias"}
    assert keys == expected


def test_unknown_projector_refused(tokenizer, tmp_path):
    # The model raises ValueError; loading a checkpoint that asks for it is the user's error.
    with pytest.raises(ValueError, match="unknown projector"):
        Captioner(_config(tokenizer.vocab_size, projector="conv"))
    save_captioner(_model(tokenizer), tokenizer, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["projector"] = "conv"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="unknown projector"):
        load_captioner(tmp_path / "ckpt")


# ----------------------------------------------------------------------------- freezing


def _trainable(model):
    return {k for k, _ in tree_flatten(model.trainable_parameters())}


def test_freeze_and_unfreeze_change_exactly_the_trainable_set(tokenizer):
    model = _model(tokenizer, projection_dim=16)
    everything = {k for k, _ in tree_flatten(model.parameters())}
    encoder = {k for k in everything if k.startswith("encoder.")}
    rest = everything - encoder
    assert _trainable(model) == everything

    model.freeze_encoder()
    assert _trainable(model) == rest and model.encoder_frozen

    # Key biases never train: softmax ignores them, so their gradient is zero.
    key_biases = {k for k in encoder if k.endswith("self_attn.k_proj.bias")}
    assert len(key_biases) == 3
    model.unfreeze_encoder(last_n=2)  # of 3 blocks
    tail = {
        k
        for k in encoder
        if k.startswith(("encoder.encoder.layers.1.", "encoder.encoder.layers.2."))
        or k.startswith("encoder.post_layernorm.")
    } - key_biases
    assert len(tail) > 4
    assert _trainable(model) == rest | tail

    model.unfreeze_encoder(last_n=0)
    assert _trainable(model) == rest

    model.unfreeze_encoder()
    projection = {k for k in encoder if k.startswith("encoder.visual_projection.")}
    assert projection and _trainable(model) == everything - projection - key_biases

    with pytest.raises(ValueError, match="last_n"):
        model.unfreeze_encoder(last_n=4)


def test_gradients_reach_only_trainable_parameters(tokenizer):
    model = _model(tokenizer)
    model.freeze_encoder()
    model.unfreeze_encoder(last_n=1)
    pixels = mx.random.normal((2, 32, 32, 3))
    tokens = _tokens()

    def loss(m):
        logits = m(m.encode(pixels), tokens[:, :-1])
        return nn.losses.cross_entropy(logits, tokens[:, 1:], reduction="mean")

    _, grads = nn.value_and_grad(model, loss)(model)
    grads = dict(tree_flatten(grads))
    assert set(grads) == _trainable(model)
    assert float(mx.abs(grads["encoder.encoder.layers.2.mlp.fc1.weight"]).max()) > 0


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip_identical_logits(tokenizer, checkpoint):
    assert sorted(os.listdir(checkpoint)) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert not [p for p in os.listdir(checkpoint.parent) if p.startswith(".")]  # no temp left
    original = _model(tokenizer, seed=4)
    model, tok = load_captioner(checkpoint)
    assert not model.training
    assert model.config.to_dict() == original.config.to_dict()
    pixels = mx.random.normal((2, 32, 32, 3))
    np.testing.assert_array_equal(
        np.array(model(model.encode(pixels), _tokens())),
        np.array(original(original.encode(pixels), _tokens())),
    )
    assert tok.encode(CAPTIONS[0]) == tokenizer.encode(CAPTIONS[0])
    config = json.loads((checkpoint / "config.json").read_text())
    assert CaptionerConfig.from_dict(config).to_dict() == original.config.to_dict()


def test_conv_stem_round_trip(tokenizer, tmp_path):
    original = _model(tokenizer, seed=5, stem="conv")
    save_captioner(original, tokenizer, tmp_path / "conv")
    assert json.loads((tmp_path / "conv" / "config.json").read_text())["vision"]["stem"] == "conv"
    model, _ = load_captioner(tmp_path / "conv")
    assert "encoder.embeddings.patch_embedding.convs.0.weight" in dict(
        tree_flatten(model.parameters())
    )
    pixels = mx.random.normal((2, 32, 32, 3))
    np.testing.assert_array_equal(
        np.array(model(model.encode(pixels), _tokens())),
        np.array(original(original.encode(pixels), _tokens())),
    )


def test_save_replaces_an_existing_checkpoint(tokenizer, tmp_path):
    path = tmp_path / "ck"
    save_captioner(_model(tokenizer, seed=1), tokenizer, path)
    save_captioner(_model(tokenizer, seed=2), tokenizer, path)
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    model, _ = load_captioner(path)
    ref = _model(tokenizer, seed=2)
    np.testing.assert_array_equal(
        np.array(model.decoder.embed_tokens.weight), np.array(ref.decoder.embed_tokens.weight)
    )


def test_write_model_files_into_existing_folder(tokenizer, tmp_path):
    write_model_files(_model(tokenizer), tokenizer, tmp_path)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(tmp_path))
    load_captioner(tmp_path)


def _copy(checkpoint, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(checkpoint, dst)
    return dst


def test_bad_checkpoints_refused(tokenizer, checkpoint, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_captioner(tmp_path / "nowhere")
    with pytest.raises(UserError, match="is a file"):
        load_captioner(checkpoint / "config.json")

    broken = _copy(checkpoint, tmp_path)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="missing tokenizer.json"):
        load_captioner(broken)


def test_corrupt_weights_refused(checkpoint, tmp_path):
    broken = _copy(checkpoint, tmp_path)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_captioner(broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="corrupt"):
        load_captioner(broken)


def test_shape_mismatch_and_bad_config_refused(checkpoint, tmp_path):
    broken = _copy(checkpoint, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config["decoder"]["hidden_size"] = 48
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="shape mismatches"):
        load_captioner(broken)
    config["decoder"]["hidden_size"] = 24
    config["decoder"]["num_layers"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="missing"):
        load_captioner(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="bad config.json"):
        load_captioner(broken)
    (broken / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(UserError, match="not a captioner config"):
        load_captioner(broken)


def test_tokenizer_larger_than_vocabulary_refused(checkpoint, tmp_path):
    broken = _copy(checkpoint, tmp_path)
    bigger = CaptionTokenizer.train(CAPTIONS + ["zebra giraffe elephant kangaroo"] * 3, 400)
    assert bigger.vocab_size > 300 or pytest.skip("corpus too small for a bigger vocabulary")
    bigger.save(broken / "tokenizer.json")
    with pytest.raises(UserError, match="do not belong together"):
        load_captioner(broken)


def test_hub_id_uses_snapshot_download(checkpoint, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(checkpoint)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model, _ = load_captioner("someone/tiny-captioner")
    assert calls == [
        ("someone/tiny-captioner", ["model.safetensors", "config.json", "tokenizer.json"])
    ]
    assert isinstance(model, Captioner)

    def offline(repo_id, **kw):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match="could not be fetched"):
        load_captioner("someone/missing")


# ----------------------------------------------------------------------------- generation


def test_generate_from_pixels_features_and_image_tokens(tokenizer, checkpoint):
    model, tok = load_captioner(checkpoint)
    pixels = mx.random.normal((2, 32, 32, 3))
    beam = DecodingConfig(strategy="beam", num_beams=2)
    a = generate(model, pixels, tok, config=beam)
    b = decode(model.decoder, model.project(model.encode_features(pixels)), tok, beam)
    c = decode(model.decoder, model.encode(pixels), tok, beam)
    assert [x.token_ids for x in a] == [x.token_ids for x in b] == [x.token_ids for x in c]
    assert all(x.text == tok.decode(x.token_ids) for x in a)


def test_caption_api_paths_and_pil(checkpoint, image_files):
    model, tok = load_captioner(checkpoint)
    pixels = preprocess_paths(image_files, model.config.vision.preprocess)
    expected = [c.token_ids for c in generate(model, pixels, tok)]
    got = caption(image_files, checkpoint=checkpoint, batch_size=2)
    assert [c.token_ids for c in got] == expected
    pil = [Image.open(p) for p in image_files]
    assert [c.token_ids for c in caption(pil, model=model, tokenizer=tok)] == expected
    (one,) = caption(image_files[0], checkpoint=checkpoint)
    assert one.token_ids == expected[0]
    via_package = mlx_caption.caption(image_files[:1], checkpoint=checkpoint, strategy="beam")
    assert len(via_package) == 1


def _generated(checkpoint, images, **options) -> list[tuple[str, float]]:
    """(text, score) per image from ``generate`` on the preprocessed files: what the CLI owes."""
    model, tok = load_captioner(checkpoint)
    pixels = preprocess_paths(images, model.config.vision.preprocess)
    config = DecodingConfig(**options)
    return [(c.text, c.score) for c in generate(model, pixels, tok, config=config)]


def _caption_cli_json(capsys, checkpoint, images, *flags) -> list[dict]:
    assert main(["caption", "--checkpoint", str(checkpoint), *images, *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _assert_rows_equal(rows, images, expected):
    assert [r["image"] for r in rows] == list(images)
    assert [r["caption"] for r in rows] == [text for text, _ in expected]
    # The CLI rounds scores to 6 decimals.
    assert [r["score"] for r in rows] == pytest.approx([s for _, s in expected], abs=1e-6)


@pytest.mark.parametrize(
    "flags, options", [([], {}), (["--beam", "3"], {"strategy": "beam", "num_beams": 3})]
)
def test_caption_cli_prints_what_generate_returns(checkpoint, image_files, capsys, flags, options):
    expected = _generated(checkpoint, image_files, **options)
    _assert_rows_equal(
        _caption_cli_json(capsys, checkpoint, image_files, *flags), image_files, expected
    )

    assert main(["caption", "--checkpoint", str(checkpoint), *image_files, *flags]) == 0
    # Compared whole: a random captioner's text may hold any character, line breaks included.
    lines = "".join(
        f"{path}\t{text}\n" for path, (text, _) in zip(image_files, expected, strict=True)
    )
    assert capsys.readouterr().out == lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny captioner trained for a few steps on synthetic shapes, and three images it did
    not see. Its captions are words that end (``<end>``) yet are far from certain, so each
    decoding option has something to change."""
    folder = tmp_path_factory.mktemp("trained")
    paths, captions = synthetic_images(folder / "data", images=11, size=32)
    first_captions = captions[::5]  # five captions per synthetic image
    checkpoint = tiny_checkpoint(
        folder / "captioner",
        captions=captions,
        images=paths[:8],
        image_captions=first_captions[:8],
        steps=15,
    )
    return checkpoint, [str(p) for p in paths[8:]]


# Every decoding flag of `mlx-caption caption`: (its arguments, the DecodingConfig fields they
# set, a setting of other flags under which it changes the trained captioner's captions, and
# that setting's fields). The flag comes after the setting, so `--seed 1` overrides `--seed 0`.
SAMPLING = (["--sample", "--seed", "0"], {"strategy": "sample", "seed": 0})
FLAG_CASES = {
    "--beam": (["--beam", "3"], {"strategy": "beam", "num_beams": 3}, [], {}),
    "--max-length": (["--max-length", "4"], {"max_length": 4}, [], {}),
    # No repeated tokens makes greedy end early; --min-length keeps it going.
    "--min-length": (
        ["--min-length", "16"],
        {"min_length": 16},
        ["--no-repeat-ngram", "1"],
        {"no_repeat_ngram_size": 1},
    ),
    "--length-penalty": (
        ["--length-penalty", "0"],
        {"length_penalty": 0.0},
        ["--beam", "3"],
        {"strategy": "beam", "num_beams": 3},
    ),
    "--no-repeat-ngram": (["--no-repeat-ngram", "1"], {"no_repeat_ngram_size": 1}, [], {}),
    "--repetition-penalty": (["--repetition-penalty", "3"], {"repetition_penalty": 3.0}, [], {}),
    "--sample": (["--sample"], {"strategy": "sample"}, ["--seed", "0"], {"seed": 0}),
    "--temperature": (["--temperature", "3"], {"temperature": 3.0}, *SAMPLING),
    "--top-k": (["--top-k", "1"], {"top_k": 1}, *SAMPLING),
    "--top-p": (["--top-p", "0.05"], {"top_p": 0.05}, *SAMPLING),
    "--seed": (["--seed", "1"], {"seed": 1}, *SAMPLING),
    "--prompt": (["--prompt", "a blue"], {"prompt": "a blue"}, [], {}),
}


def test_every_decoding_flag_has_a_case(capsys, monkeypatch):
    monkeypatch.setenv("PYTHON_COLORS", "0")  # plain help text on Python 3.14+ too
    with pytest.raises(SystemExit):
        main(["caption", "--help"])
    section = capsys.readouterr().out.split("\ndecoding:\n", 1)[1].split("\n\n", 1)[0]
    flags = {line.split()[0] for line in section.splitlines() if line.startswith("  --")}
    assert flags == set(FLAG_CASES)


@pytest.mark.parametrize("flag", list(FLAG_CASES))
def test_caption_cli_decoding_flag_reaches_the_decoder(trained, capsys, flag):
    checkpoint, images = trained
    flag_args, flag_options, setting_args, setting_options = FLAG_CASES[flag]
    rows = _caption_cli_json(capsys, checkpoint, images, *setting_args, *flag_args)
    expected = _generated(checkpoint, images, **{**setting_options, **flag_options})
    _assert_rows_equal(rows, images, expected)

    without_flag = _generated(checkpoint, images, **setting_options)
    rounded = [[(text, round(score, 4)) for text, score in r] for r in (expected, without_flag)]
    assert rounded[0] != rounded[1], f"{flag} changes nothing here: the case shows nothing"


def test_caption_cli_errors(checkpoint, image_files, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    assert main(["caption", "--checkpoint", str(checkpoint), image_files[0], str(bad)]) == 2
    assert "bad.jpg" in capsys.readouterr().err
    assert main(["caption", "--checkpoint", str(tmp_path), image_files[0]]) == 2
    assert "missing model.safetensors" in capsys.readouterr().err
    args = ["caption", "--checkpoint", str(checkpoint), image_files[0], "--sample", "--beam", "2"]
    assert main(args) == 2


def test_caption_cli_subprocess(checkpoint, image_files):
    cmd = [sys.executable, "-m", "mlx_caption.cli", "caption", "--checkpoint", str(checkpoint)]
    cmd += [image_files[0], "--sample", "--seed", "3", "--top-k", "5", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert rows[0]["image"] == image_files[0] and isinstance(rows[0]["caption"], str)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == rows  # seeded: reproducible
