"""GIT against transformers: every vision layer, the decoder's logits, the processor (CLIP's
and git-base's ImageNet mean/std), the tokenizer, and greedy and beam-search captions token
for token (prompted and not), on random-initialised checkpoints of the real architecture saved
with ``save_pretrained``; conversion, loading and the commands."""

import json

import mlx.core as mx
import numpy as np
import pytest
from blip_fixtures import VOCAB
from git_fixtures import CLS, SEP, image_processor, save_hf_git
from prerequisites import require_module
from test_preprocess import random_image

from mlx_caption import hub
from mlx_caption import loading as conv
from mlx_caption.cli import main
from mlx_caption.data.preprocess import preprocess_image
from mlx_caption.generate import generate
from mlx_caption.models.git import GitConfig, GitForCausalLM
from mlx_caption.models.layers import attend_prefixed, causal_mask
from mlx_caption.pretrained_tokenizer import PretrainedTokenizer

torch = require_module("torch", "the [torch] extra")
reference = pytest.importorskip("mlx_caption.models.git.reference")

IMAGES = 8
MAX_NEW = 20


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_hf_git(tmp_path_factory.mktemp("git") / "hf")


@pytest.fixture(scope="module")
def hf_model(hf_folder):
    return reference.load_model(hf_folder)


@pytest.fixture(scope="module")
def loaded(hf_folder):
    return conv.load_captioner(hf_folder)


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


# ----------------------------------------------------------------------------- the network


def test_vision_tower_every_layer_matches(loaded, hf_model, pixels):
    model, _ = loaded
    out = model.encoder(mx.array(pixels[:2]), output_hidden_states=True)
    with torch.no_grad():
        ref = hf_model.git.image_encoder(
            pixel_values=reference.pixel_values(pixels[:2]), output_hidden_states=True
        )
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(np.array(ours), theirs.numpy(), atol=1e-4)
    # post_layernorm on every token: the grid the decoder reads.
    np.testing.assert_allclose(
        np.array(out.last_hidden_state), ref.last_hidden_state.numpy(), atol=1e-4
    )
    assert out.last_hidden_state.shape == (2, 197, 32)


def test_logits_match_transformers(loaded, hf_model, pixels):
    model, tokenizer = loaded
    ids = np.array([[CLS, *tokenizer.encode_text("a small dog on the grass")]] * 3)
    ours = np.array(model(model.encode(mx.array(pixels[:3])), mx.array(ids)))
    theirs = reference.logits(hf_model, pixels[:3], ids)
    assert ours.shape == theirs.shape == (3, ids.shape[1], len(VOCAB))
    assert theirs.std() > 0.5  # logits with a spread: a near-constant output would pass too
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # The image decides: another image gives other logits.
    assert np.abs(theirs[0] - reference.logits(hf_model, pixels[3:4], ids[:1])[0]).max() > 1.0


def test_cached_decoding_equals_the_full_forward(loaded, pixels):
    """The KV-cached step (one token at a time, over the image prefix's keys and values
    computed once) gives the teacher-forced logits, with beams sharing the image's memory."""
    model, tokenizer = loaded
    ids = mx.array([[CLS, *tokenizer.encode_text("two cats on a red car")]] * 2)
    image = model.encode(mx.array(pixels[:1]))
    full = model(image, ids[:1])
    memory = model.decoding_memory(image)  # one image, two rows (beams) read it
    cache = model.make_cache(2, 16)
    n = ids.shape[1]
    steps = [model.decode_step(ids[:, i : i + 1], memory, cache, i)[0] for i in range(n)]
    stepped = np.array(mx.concatenate(steps, 1))
    np.testing.assert_allclose(stepped[0], np.array(full[0]), atol=1e-5)
    np.testing.assert_allclose(stepped[1], stepped[0], atol=1e-6)


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


def test_sanitize_is_idempotent(hf_model):
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    once = GitForCausalLM.sanitize(state)
    twice = GitForCausalLM.sanitize(once)
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)
    patch = "git.image_encoder.vision_model.embeddings.patch_embedding.weight"
    assert once[patch].shape == (32, 16, 16, 3)
    assert not any(k.endswith("position_ids") for k in once)
    assert "output.weight" in once and "git.visual_projection.visual_projection.1.bias" in once


# ----------------------------------------------------------------------------- processor, tokenizer


@pytest.mark.parametrize("imagenet", [False, True])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
@pytest.mark.parametrize("size", [(97, 61), (300, 400), (224, 224)])
def test_processor_matches_transformers(tmp_path_factory, imagenet, mode, size):
    """git-base-coco ships CLIP's processor, git-base ImageNet's mean and std: what the
    checkpoint's preprocessor_config.json says is what runs."""
    from git_fixtures import image_processor as hf_processor

    folder = tmp_path_factory.mktemp("proc")
    hf_processor(imagenet=imagenet).save_pretrained(folder)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    cfg = GitConfig.from_hf(json.loads(reference.hf_config(GitConfig()).to_json_string()), pre)
    img = random_image(mode, size=size)
    ours = preprocess_image(img, cfg.vision.preprocess)
    theirs = image_processor(imagenet=imagenet)(images=img, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, theirs[0].transpose(1, 2, 0), atol=1e-5)
    assert (cfg.vision.preprocess.image_mean[0] == 0.485) == imagenet


TEXTS = [
    "A picture of two Cats sitting on the grass.",
    "a man,  next to a  RED car",
    "an unknownword here",
    "",
]


@pytest.mark.parametrize("vocab_files", [False, True])
def test_tokenizer_gives_transformers_ids_and_text(tmp_path, vocab_files):
    from transformers import AutoTokenizer

    folder = save_hf_git(tmp_path / "hf", vocab_files=vocab_files, layers=1)
    theirs = AutoTokenizer.from_pretrained(folder)
    model = conv.load_model(folder)
    ours = PretrainedTokenizer.from_folder(folder, model.decoder.special_tokens)
    assert ours.vocab_size == len(theirs) == len(VOCAB)
    for text in TEXTS:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.encode_text(text) == ids
        row = [CLS, *ids, SEP, 0, 0]
        assert ours.decode(row[1:]) == theirs.decode(row, skip_special_tokens=True)
    rows = ours.encode_batch(["Two dogs."], max_length=8)
    assert rows[0].tolist() == [*theirs("two dogs")["input_ids"], *[-1] * 4]  # [CLS] .. [SEP]


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
    assert cfg.vision.num_tokens == 197 and cfg.text.num_hidden_layers == 6
    assert GitConfig.from_dict(cfg.to_dict()) == cfg


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


@pytest.mark.parametrize("prompt", [None, "a picture of"])
@pytest.mark.parametrize("beams", [1, 2, 3, 4])
def test_captions_match_transformers_generate(loaded, hf_model, hf_generate, pixels, prompt, beams):
    model, tokenizer = loaded
    prefix = [CLS, *(tokenizer.encode_text(prompt) if prompt else [])]
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
    assert len({tuple(c.token_ids) for c in ours}) >= 4  # the image decides the caption
    texts = [tokenizer.decode([*prefix[1:], *t]) for t in theirs]
    assert [c.text for c in ours] == texts
    if prompt:
        assert all(c.text.startswith("a picture of") for c in ours)


@pytest.mark.parametrize(("early_stopping", "length_penalty"), [(True, 1.0), (False, 2.0)])
def test_beam_rules_match_transformers(loaded, hf_generate, pixels, early_stopping, length_penalty):
    """All returned beams and their scores, with both stopping rules."""
    model, tokenizer = loaded
    options = dict(num_beams=3, early_stopping=early_stopping, length_penalty=length_penalty)
    ours = generate(model, pixels, tokenizer, "beam", max_length=MAX_NEW, **options)
    theirs, scores = hf_generate(
        [CLS], max_new_tokens=MAX_NEW, num_return_sequences=3, return_scores=True, **options
    )
    for i, caption in enumerate(ours):
        beams = [caption, *caption.alternatives]
        assert [b.token_ids for b in beams] == theirs[3 * i : 3 * i + 3]
        np.testing.assert_allclose([b.score for b in beams], scores[3 * i : 3 * i + 3], atol=1e-4)


def test_attention_maps_over_the_patch_grid(loaded, pixels):
    """GIT has no cross-attention: the map is a text token's self-attention over the image
    tokens, averaged over layers and heads (it sums to below 1: the rest is on the text)."""
    model, tokenizer = loaded
    cap = generate(model, pixels[:2], tokenizer, max_length=6, return_attention=True)[0]
    assert cap.attention.shape == (len(cap.token_ids), 197)
    sums = cap.attention.sum(-1)
    assert (sums > 0.0).all() and (sums <= 1.0 + 1e-5).all()
    assert cap.attention_grid().shape == (len(cap.token_ids), 14, 14)
    plain = generate(model, pixels[:2], tokenizer, max_length=6)[0]
    assert plain.token_ids == cap.token_ids


# ----------------------------------------------------------------------------- loading


def test_convert_and_load_by_folder_and_zoo_name(hf_folder, pixels, tmp_path, monkeypatch):
    record = conv.convert(hf_folder, tmp_path / "conv")
    out = tmp_path / "conv"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "convert.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    assert record["family"] == "git"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "git" and cfg["vision"]["model_type"] == "git_vision_model"
    a, tok_a = conv.load_captioner(hf_folder)
    b, tok_b = conv.load_captioner(out)
    caps_a = generate(a, pixels[:3], tok_a, "beam", num_beams=3)
    caps_b = generate(b, pixels[:3], tok_b, "beam", num_beams=3)
    assert [c.token_ids for c in caps_a] == [c.token_ids for c in caps_b]
    assert [c.text for c in caps_a] == [c.text for c in caps_b]

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_download(repo_id, allow_patterns):
        calls.append(repo_id)
        return hf_folder

    monkeypatch.setattr(hub, "download", fake_download)
    c, tok_c = conv.load_captioner("git-base-coco")
    assert calls == ["microsoft/git-base-coco"]
    assert conv.is_converted(tmp_path / "hf_home" / "mlx-caption" / "git-base-coco")
    caps_c = generate(c, pixels[:3], tok_c, "beam", num_beams=3)
    assert [x.token_ids for x in caps_c] == [x.token_ids for x in caps_a]


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
    missing = {k: v for k, v in weights.items() if "visual_projection.visual_projection.0" not in k}
    mx.save_safetensors(str(broken / "model.safetensors"), missing)
    refused(broken, "missing tensor", "visual_projection.visual_projection.0")

    wrong = dict(weights)
    wrong["git.encoder.layer.1.attention.self.key.weight"] = mx.zeros((33, 32))
    mx.save_safetensors(str(broken / "model.safetensors"), wrong)
    refused(broken, "layer.1.attention.self.key.weight", "(33, 32)")

    (broken / "model.safetensors").write_bytes(blob)
    config = json.loads((hf_folder / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "architectures": ["GitModel"]}))
    refused(broken, "GitModel", "GitForCausalLM")
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "gitx"}))
    refused(broken, "unsupported architecture", "'gitx'", "git", "blip")


def test_verify_against_transformers(hf_folder, tmp_path, capsys):
    args = ["convert", "--model", str(hf_folder), "--out", str(tmp_path / "v"), "--verify"]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["verify_max_abs_diff"] < 1e-4
    assert set(record["verify_outputs"]) == {"image_tokens", "logits"}


def test_caption_eval_page_and_api_take_git(hf_folder, tmp_path, capsys):
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
    assert main([*args, "--prompt", "a picture of", "--beam", "3"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, tokenizer = conv.load_captioner(hf_folder)
    pixels = np.stack(
        [preprocess_image(Image.open(p), model.config.vision.preprocess) for p in paths]
    )
    want = generate(model, pixels, tokenizer, "beam", num_beams=3, prompt="a picture of")
    assert [r["caption"] for r in rows] == [c.text for c in want]
    api = mlx_caption.caption(paths, model=str(hf_folder), strategy="beam", num_beams=3,
                              prompt="a picture of")  # fmt: skip
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
    assert (out / "gallery.html").read_text().count("<figure>") >= 2  # word heat maps

    loaded = load_for_page(str(hf_folder))
    assert loaded.grid == (14, 14) and loaded.max_length == 20
    result = caption_image(loaded, random_image("RGB", (200, 150)), Decoding(max_length=5))
    assert result.words and all(grid.shape == (14, 14) for _, grid in result.words)
