"""ViT-GPT2 against transformers: the encoder, the decoder's logits, the processor, the
tokenizer, and greedy and beam-search captions token for token (prompted and not), on
random-initialised ``VisionEncoderDecoderModel`` checkpoints (ViT + GPT-2) of the real
architecture saved with ``save_pretrained``."""

import json

import mlx.core as mx
import numpy as np
import pytest
from prerequisites import require_module
from test_preprocess import random_image
from vit_gpt2_fixtures import (
    gpt2_tokenizer,
    hf_vit_gpt2_config,
    image_processor,
    make_hf_vit_gpt2,
    save_hf_vit_gpt2,
    write_bpe_files,
)

from mlx_caption import hub
from mlx_caption import loading as conv
from mlx_caption.cli import main
from mlx_caption.data.preprocess import preprocess_image
from mlx_caption.generate import generate
from mlx_caption.models.vit_gpt2 import VisionEncoderDecoderModel, VitGpt2Config
from mlx_caption.pretrained_tokenizer import PretrainedTokenizer

torch = require_module("torch", "the [torch] extra")
reference = pytest.importorskip("mlx_caption.models.vit_gpt2.reference")

IMAGES = 8
MAX_NEW = 20
PROMPT = "a picture of"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_hf_vit_gpt2(tmp_path_factory.mktemp("vit_gpt2") / "hf")


@pytest.fixture(scope="module")
def hf_model(hf_folder):
    return reference.load_model(hf_folder)


@pytest.fixture(scope="module")
def loaded(hf_folder):
    return conv.load_captioner(hf_folder)


@pytest.fixture(scope="module")
def end(loaded):
    return loaded[0].decoder.special_tokens.end


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).standard_normal((IMAGES, 224, 224, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def hf_generate(hf_model, pixels):
    """transformers' ``generate`` on :func:`pixels`, each setting run once per module."""
    done = {}

    def run(prefix, **options):
        key = (tuple(prefix), tuple(sorted(options.items())))
        if key not in done:
            done[key] = reference.generate(hf_model, pixels, prefix, **options)
        return done[key]

    return run


def _prefix(tokenizer, end, prompt):
    return [end, *(tokenizer.encode_text(prompt) if prompt else [])]


# ----------------------------------------------------------------------------- the network


def test_config_reads_the_checkpoint(loaded, end):
    model, _ = loaded
    cfg = model.config
    assert cfg.vision.hidden_size == 48 and cfg.text.n_embd == 32 and cfg.projects
    assert cfg.vision.num_tokens == 197 and cfg.vision.preprocess.resample == "bilinear"
    assert cfg.vision.preprocess.image_mean == (0.5, 0.5, 0.5)
    assert (cfg.text.decoder_start_token_id, cfg.text.eos_token_id) == (end, end)
    assert cfg.text.pad_token_id == end and cfg.max_new_tokens == 20  # transformers' default
    assert model.decoder.special_tokens.unk is None  # GPT-2's unk is its end token


def test_encoder_every_layer_matches(loaded, hf_model, pixels):
    model, _ = loaded
    out = model.encoder(mx.array(pixels[:2]), output_hidden_states=True)
    with torch.no_grad():
        ref = hf_model.encoder(
            pixel_values=reference.pixel_values(pixels[:2]), output_hidden_states=True
        )
        projected = hf_model.enc_to_dec_proj(ref.last_hidden_state)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(np.array(ours), theirs.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        np.array(out.last_hidden_state), ref.last_hidden_state.numpy(), atol=1e-4
    )
    tokens = model.encode(mx.array(pixels[:2]))
    assert tokens.shape == (2, 197, 32)  # enc_to_dec_proj: the encoder is wider
    np.testing.assert_allclose(np.array(tokens), projected.numpy(), atol=1e-4)


def test_logits_match_transformers(loaded, hf_model, pixels, end):
    model, tokenizer = loaded
    ids = np.array([[end, *tokenizer.encode_text("a small dog on the grass")]] * 3)
    ours = np.array(model(model.encode(mx.array(pixels[:3])), mx.array(ids)))
    theirs = reference.logits(hf_model, pixels[:3], ids)
    assert ours.shape == theirs.shape == (3, ids.shape[1], end + 1)
    assert theirs.std() > 0.5  # logits with a spread: a near-constant output would pass too
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {"hidden_size": 32},  # the same widths: no enc_to_dec_proj
        {"scale_attn_by_inverse_layer_idx": True, "reorder_and_upcast_attn": True},
        {"scale_attn_weights": False, "n_inner": 40, "activation_function": "gelu"},
    ],
)
def test_gpt2_options_match_transformers(tmp_path, options):
    folder = save_hf_vit_gpt2(tmp_path / "hf", image_size=32, **options)
    model, tokenizer = conv.load_captioner(folder)
    assert model.config.projects == ("hidden_size" not in options)
    assert ("enc_to_dec_proj" in model) == model.config.projects
    hf = reference.load_model(folder)
    pixels = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    end = model.decoder.special_tokens.end
    ids = np.array([[end, *tokenizer.encode_text("two cats near a red car")]] * 2)
    ours = np.array(model(model.encode(mx.array(pixels)), mx.array(ids)))
    np.testing.assert_allclose(ours, reference.logits(hf, pixels, ids), atol=1e-4)


def test_cached_decoding_equals_the_full_forward(loaded, pixels, end):
    """The KV-cached step (one token at a time) gives the teacher-forced logits."""
    model, tokenizer = loaded
    decoder = model.decoder
    ids = mx.array([[end, *tokenizer.encode_text("two cats on a red car")]])
    image = model.encode(mx.array(pixels[:1]))
    full = decoder(ids, image)[0]
    memory = decoder.decoding_memory(image)
    cache = decoder.make_cache(1, 16)
    n = ids.shape[1]
    steps = [decoder.decode_step(ids[:, i : i + 1], memory, cache, i)[0] for i in range(n)]
    np.testing.assert_allclose(np.array(mx.concatenate(steps, 1)), np.array(full), atol=1e-5)


def test_sanitize_transposes_conv1d_and_is_idempotent(hf_model):
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    # Older GPT-2 checkpoints (nlpconnect's among them) carry causal-mask buffers.
    state["decoder.transformer.h.0.attn.bias"] = np.ones((1, 1, 64, 64), np.float32)
    state["decoder.transformer.h.0.crossattention.masked_bias"] = np.array(-1e4, np.float32)
    once = VisionEncoderDecoderModel.sanitize(state)
    twice = VisionEncoderDecoderModel.sanitize(once)
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)
    block = "decoder.transformer.h.1."
    assert once[block + "attn.c_attn.weight"].shape == (96, 32)  # torch's Conv1D: (32, 96)
    assert once[block + "crossattention.c_attn.weight"].shape == (64, 32)
    assert once[block + "mlp.c_fc.weight"].shape == (128, 32)
    square = state[block + "crossattention.q_attn.weight"]
    np.testing.assert_array_equal(once[block + "crossattention.q_attn.weight"], square.T)
    assert once["encoder.embeddings.patch_embeddings.projection.weight"].shape == (48, 16, 16, 3)
    assert "decoder.lm_head.weight" not in once and not any(k.endswith("bias") and
        ".attn.bias" in k or "masked_bias" in k for k in once)  # fmt: skip
    back = reference.to_hf_state(once, list(hf_model.state_dict()))
    for key, value in hf_model.state_dict().items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)


# ----------------------------------------------------------------------------- processor, tokenizer


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
@pytest.mark.parametrize("size", [(97, 61), (400, 300), (224, 224)])
def test_processor_matches_transformers(loaded, mode, size):
    model, _ = loaded
    img = random_image(mode, size=size)
    ours = preprocess_image(img, model.config.vision.preprocess)
    # transformers' ViT processor leaves grayscale and CMYK as they are (and then fails on
    # them) unless asked to convert; ours always converts to RGB.
    theirs = image_processor()(images=img, do_convert_rgb=True, return_tensors="np")
    theirs = theirs["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs.transpose(1, 2, 0), atol=1e-5)


TEXTS = [
    "A picture of two Cats sitting on the grass.",
    "a man,  next to a  RED car",
    "big dogs standing near the table's edge",
    "an unknownword here: ünïcode ✓",
    "",
]


@pytest.mark.parametrize("vocab_files", [False, True])
def test_tokenizer_gives_transformers_ids_and_text(tmp_path, vocab_files):
    from transformers import AutoTokenizer

    folder = save_hf_vit_gpt2(tmp_path / "hf", vocab_files=vocab_files, layers=1, image_size=32)
    assert (folder / "tokenizer.json").is_file() != vocab_files
    assert (folder / "merges.txt").is_file() == vocab_files
    theirs = AutoTokenizer.from_pretrained(folder)
    model = conv.load_model(folder)
    end = model.decoder.special_tokens.end
    ours = PretrainedTokenizer.from_folder(folder, model.decoder.special_tokens)
    assert ours.vocab_size == len(theirs) == end + 1
    for text in TEXTS:
        ids = theirs(text)["input_ids"]
        assert ours.encode_text(text) == ids
        row = [*ids, end, end, end]
        assert ours.decode(row) == theirs.decode(row, skip_special_tokens=True).strip()
    rows = ours.encode_batch(["Two dogs.", "a " * 40], max_length=8)
    want = [end, *theirs("two dogs")["input_ids"], end]
    assert rows[0].tolist() == [*want, *[-1] * (8 - len(want))]  # NO_TOKEN, not GPT-2's pad
    assert rows[1, 0] == end and rows[1, -1] == end and (rows[1] >= 0).all()


# ----------------------------------------------------------------------------- generation


def _top2_gap(hf_model, pixels, prefix, generated, position):
    """transformers' gap between its two best next tokens after ``generated[:position]``."""
    ids = np.array([[*prefix, *generated[:position]]])
    logits = reference.logits(hf_model, pixels[None], ids)[0, -1].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    top = np.sort(logp)[-2:]
    return top[1] - top[0]


def _compare(ours, theirs, scores, hf_model, pixels, prefix):
    """Token-for-token equality, except where transformers' own top-2 scores tie within
    1e-5 (then which of two equal candidates comes first is arbitrary): those images are
    returned. Greedy: the two best next tokens at the first difference; beam search
    (``scores`` given): the two best finished hypotheses."""
    ties = []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a.token_ids == b:
            continue
        if scores is None:
            where = next(j for j, (x, y) in enumerate(zip(a.token_ids, b, strict=False)) if x != y)
            gap = _top2_gap(hf_model, pixels[i], prefix, b, where)
        else:
            gap = abs(a.score - scores[i])
        assert gap <= 1e-5, f"image {i}: ours {a.token_ids}, transformers {b} (gap {gap:.3g})"
        ties.append(i)
    return ties


@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize("beams", [1, 2, 3, 4])
def test_captions_match_transformers_generate(
    loaded, hf_model, hf_generate, pixels, end, prompt, beams
):
    model, tokenizer = loaded
    prefix = _prefix(tokenizer, end, prompt)
    strategy = "greedy" if beams == 1 else "beam"
    ours = generate(
        model, pixels, tokenizer, strategy, num_beams=beams, max_length=MAX_NEW, prompt=prompt
    )
    theirs, scores = hf_generate(
        prefix, num_beams=beams, max_new_tokens=MAX_NEW, num_return_sequences=beams,
        return_scores=True,
    )  # fmt: skip
    theirs, scores = theirs[::beams], (scores and scores[::beams])
    ties = _compare(ours, theirs, scores, hf_model, pixels, prefix)
    assert len(ties) <= 1, f"transformers' top-2 scores tie for images {ties}"
    # Long enough to exercise the search: captions that end and captions cut at the limit.
    lengths = [len(c.token_ids) for c in ours]
    assert min(lengths) < MAX_NEW and max(lengths) == MAX_NEW
    assert sum(c.finished for c in ours) >= 2
    assert len({tuple(c.token_ids) for c in ours}) >= 6  # the image decides the caption
    texts = [tokenizer.decode([*prefix[1:], *t]) for t in theirs]
    assert [c.text for c in ours] == texts
    if prompt:
        assert all(c.text.startswith(PROMPT) for c in ours)


@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize(("early_stopping", "length_penalty"), [(True, 1.0), (False, 2.0)])
def test_beam_rules_match_transformers(
    loaded, hf_generate, pixels, end, prompt, early_stopping, length_penalty
):
    """All returned beams and their scores, with both stopping rules: the rules change the
    captions of some images (so each is exercised), and ours change them the same way."""
    model, tokenizer = loaded
    prefix = _prefix(tokenizer, end, prompt)
    options = dict(num_beams=3, early_stopping=early_stopping, length_penalty=length_penalty)
    ours = generate(model, pixels, tokenizer, "beam", max_length=MAX_NEW, prompt=prompt, **options)
    theirs, scores = hf_generate(
        prefix, max_new_tokens=MAX_NEW, num_return_sequences=3, return_scores=True, **options
    )
    default, _ = hf_generate(
        prefix, num_beams=3, max_new_tokens=MAX_NEW, num_return_sequences=3, return_scores=True
    )
    assert theirs != default, "the options should change some beams"
    for i, caption in enumerate(ours):
        beams = [caption, *caption.alternatives]
        assert [b.token_ids for b in beams] == theirs[3 * i : 3 * i + 3]
        np.testing.assert_allclose([b.score for b in beams], scores[3 * i : 3 * i + 3], atol=1e-4)


def test_default_length_comes_from_the_generation_config(loaded, hf_model, pixels, end):
    """Without options both sides decode greedily, 20 new tokens at most (transformers'
    default when the generation config sets no length; one that does is tested above)."""
    model, tokenizer = loaded
    ours = generate(model, pixels, tokenizer)
    theirs = reference.generate(hf_model, pixels, [end])
    assert [c.token_ids for c in ours] == theirs
    assert max(len(t) for t in theirs) == 20


def test_attention_maps_over_the_patch_grid(loaded, pixels):
    model, tokenizer = loaded
    cap = generate(model, pixels[:2], tokenizer, max_length=6, return_attention=True)[0]
    assert cap.attention.shape == (len(cap.token_ids), 197)
    np.testing.assert_allclose(cap.attention.sum(-1), 1.0, atol=1e-5)
    assert cap.attention_grid().shape == (len(cap.token_ids), 14, 14)
    plain = generate(model, pixels[:2], tokenizer, max_length=6)[0]
    assert plain.token_ids == cap.token_ids


# ----------------------------------------------------------------------------- loading


def test_config_refusals_name_what_is_not_supported(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
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
    # No generation_config.json: config.json's settings, the decoder's filling the gaps.
    cfg = VitGpt2Config.from_hf({**config, "max_length": 16, "decoder_start_token_id": None})
    assert cfg.max_new_tokens == 15  # the start token counts
    assert cfg.text.decoder_start_token_id == config["decoder"]["bos_token_id"]
    with pytest.raises(ValueError, match="only one end token"):
        VitGpt2Config.from_hf(config, generation={"bos_token_id": 3, "eos_token_id": [7, 8]})


def test_convert_and_load_by_folder_and_zoo_name(hf_folder, pixels, tmp_path, monkeypatch):
    record = conv.convert(hf_folder, tmp_path / "conv")
    out = tmp_path / "conv"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "convert.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    assert record["family"] == "vit_gpt2"
    assert set(record["inputs"]) == {
        "config.json", "model.safetensors", "preprocessor_config.json", "generation_config.json",
        "tokenizer.json", "tokenizer_config.json",
    }  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "vision-encoder-decoder" and cfg["decoder"] == "gpt2"
    a, tok_a = conv.load_captioner(hf_folder)
    b, tok_b = conv.load_captioner(out)
    caps_a = generate(a, pixels[:3], tok_a, "beam", num_beams=3)
    caps_b = generate(b, pixels[:3], tok_b, "beam", num_beams=3)
    assert [c.token_ids for c in caps_a] == [c.token_ids for c in caps_b]
    assert [c.text for c in caps_a] == [c.text for c in caps_b]

    # A zoo name converts into the cache on first use, then loads from there.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_download(repo_id, allow_patterns):
        calls.append(repo_id)
        return hf_folder

    monkeypatch.setattr(hub, "download", fake_download)
    c, tok_c = conv.load_captioner("vit-gpt2")
    assert calls == ["nlpconnect/vit-gpt2-image-captioning"]
    assert conv.is_converted(tmp_path / "hf_home" / "mlx-caption" / "vit-gpt2")
    conv.load_captioner("vit-gpt2")
    assert len(calls) == 1
    caps_c = generate(c, pixels[:3], tok_c, "beam", num_beams=3)
    assert [x.token_ids for x in caps_c] == [x.token_ids for x in caps_a]


def test_pytorch_bin_with_old_buffers_converts(hf_model, hf_folder, tmp_path, pixels):
    """nlpconnect's checkpoint is a pytorch_model.bin with GPT-2's causal-mask buffers."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for path in hf_folder.iterdir():
        if path.name != "model.safetensors":
            (folder / path.name).write_bytes(path.read_bytes())
    state = dict(hf_model.state_dict())
    for i in range(2):
        state[f"decoder.transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64)
        state[f"decoder.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, folder / "pytorch_model.bin")
    model, tokenizer = conv.load_captioner(folder)
    want, _ = conv.load_captioner(hf_folder)
    ours = generate(model, pixels[:2], tokenizer, "beam", num_beams=2)
    assert [c.token_ids for c in ours] == [
        c.token_ids for c in generate(want, pixels[:2], tokenizer, "beam", num_beams=2)
    ]


def test_conversion_refusals_leave_nothing(hf_folder, tmp_path, capsys):
    out = tmp_path / "out"

    def refused(folder, *fragments):
        assert main(["convert", "--model", str(folder), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        for fragment in fragments:
            assert fragment in err, err
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name[0] == "."]

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json"):
        (broken / name).write_bytes((hf_folder / name).read_bytes())
    blob = (hf_folder / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(blob[:-1000])
    refused(broken, "truncated", "model.safetensors")

    weights = dict(mx.load(str(hf_folder / "model.safetensors")))
    gone = "decoder.transformer.h.1.crossattention.q_attn.bias"
    mx.save_safetensors(str(broken / "model.safetensors"),
                        {k: v for k, v in weights.items() if k != gone})  # fmt: skip
    refused(broken, "missing tensor", "crossattention.q_attn.bias")

    wrong = dict(weights)
    wrong["decoder.transformer.h.0.mlp.c_fc.weight"] = mx.zeros((32, 65))
    mx.save_safetensors(str(broken / "model.safetensors"), wrong)
    refused(broken, "mlp.c_fc.weight", "(65, 32)")

    (broken / "model.safetensors").write_bytes(blob)
    (broken / "tokenizer.json").unlink()
    refused(broken, "no tokenizer")

    config = json.loads((hf_folder / "config.json").read_text())
    other = {**config, "decoder": {**config["decoder"], "model_type": "bert"}}
    (broken / "config.json").write_text(json.dumps(other))
    refused(broken, "'vit'", "'bert'", "ViT-GPT2")


def test_verify_against_transformers(hf_folder, tmp_path, capsys):
    args = ["convert", "--model", str(hf_folder), "--out", str(tmp_path / "v"), "--verify"]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["verify_max_abs_diff"] < 1e-4
    assert set(record["verify_outputs"]) == {"image_tokens", "logits"}


def test_caption_command_api_eval_and_page(hf_folder, tmp_path, capsys):
    from PIL import Image

    import mlx_caption
    from mlx_caption.app.captioning import Decoding, caption_image
    from mlx_caption.app.captioning import load_model as load_for_page
    from mlx_caption.data.synthetic import DATASET_FILE, write_synthetic_dataset

    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        random_image("RGB", (120, 90), seed=i).save(path)
        paths.append(str(path))
    args = ["caption", "--model", str(hf_folder), *paths, "--json"]
    assert main([*args, "--prompt", PROMPT, "--beam", "3"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, tokenizer = conv.load_captioner(hf_folder)
    pixels = np.stack(
        [preprocess_image(Image.open(p), model.config.vision.preprocess) for p in paths]
    )
    want = generate(model, pixels, tokenizer, "beam", num_beams=3, prompt=PROMPT)
    assert [r["caption"] for r in rows] == [c.text for c in want]
    assert all(r["caption"].startswith(PROMPT) for r in rows)
    api = mlx_caption.caption(paths, model=str(hf_folder), strategy="beam", num_beams=3,
                              prompt=PROMPT)  # fmt: skip
    assert [c.text for c in api] == [c.text for c in want]

    data = tmp_path / "synth"
    write_synthetic_dataset(data, images=12, seed=1, size=40)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(hf_folder), "--data", str(data / DATASET_FILE), "--limit", "3"]
    argv += ["--split", "train", "--out", str(out), "--gallery", "2"]
    argv += ["--metrics-tokenizer", "python", "--json"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["images"] == 3
    assert (out / "gallery.html").read_text().count("<figure>") >= 2

    page = load_for_page(str(hf_folder))
    assert page.grid == (14, 14) and page.max_length == 21  # the slider goes one past the default
    result = caption_image(page, random_image("RGB", (200, 150)), Decoding(max_length=5))
    assert result.words and all(grid.shape == (14, 14) for _, grid in result.words)


def test_bpe_fixture_has_the_end_token_last(tmp_path):
    size = write_bpe_files(tmp_path)
    tok = gpt2_tokenizer(tmp_path)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == size - 1 == tok.eos_token_id
    assert hf_vit_gpt2_config(size).decoder_start_token_id == size - 1
    assert make_hf_vit_gpt2(size, layers=1, image_size=32).config.pad_token_id == size - 1


def test_zoo_row_counts_transformers_parameters():
    """nlpconnect's shapes (ViT-B/16 with its pooler, GPT-2 small with cross-attention):
    the parameters transformers' model has (its LM head is the word embeddings)."""
    from mlx_caption import zoo

    entry = zoo.ZOO["vit-gpt2"]
    cfg = entry.make_config()
    assert (entry.family, entry.kind, entry.published) == ("vit_gpt2", "captioner", None)
    with torch.device("meta"):
        hf = reference.random_model(cfg)
    assert conv.count_parameters(cfg) == sum(p.numel() for p in hf.parameters())
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    row = entry.describe()
    assert row["tokens"] == 197 and row["preprocess"] == "squash 224, bilinear, mean/std 0.5"
