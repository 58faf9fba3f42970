"""BLIP against transformers: the vision tower, the decoder's logits, the processor, the
tokenizer, and greedy and beam-search captions token for token (prompted and not), on
random-initialised checkpoints of the real architecture saved with ``save_pretrained``."""

import json

import mlx.core as mx
import numpy as np
import pytest
from blip_fixtures import VOCAB, bert_tokenizer, image_processor, make_hf_blip, save_hf_blip
from prerequisites import require_module
from test_preprocess import random_image

from mlx_caption import hub
from mlx_caption import loading as conv
from mlx_caption.cli import main
from mlx_caption.data.preprocess import preprocess_image
from mlx_caption.errors import UserError
from mlx_caption.generate import generate
from mlx_caption.models.blip import BlipForConditionalGeneration
from mlx_caption.pretrained_tokenizer import PretrainedTokenizer

torch = require_module("torch", "the [torch] extra")
reference = pytest.importorskip("mlx_caption.models.blip.reference")

IMAGES = 8
MAX_NEW = 20


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_hf_blip(tmp_path_factory.mktemp("blip") / "hf")


@pytest.fixture(scope="module")
def hf_model(hf_folder):
    return reference.load_model(hf_folder)


@pytest.fixture(scope="module")
def loaded(hf_folder):
    return conv.load_captioner(hf_folder)


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).standard_normal((IMAGES, 384, 384, 3)).astype(np.float32)


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
    out = model.vision_model(mx.array(pixels[:2]), output_hidden_states=True)
    with torch.no_grad():
        ref = hf_model.vision_model(
            pixel_values=reference.pixel_values(pixels[:2]), output_hidden_states=True
        )
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(np.array(ours), theirs.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        np.array(out.last_hidden_state), ref.last_hidden_state.numpy(), atol=1e-4
    )
    np.testing.assert_allclose(np.array(out.pooler_output), ref.pooler_output.numpy(), atol=1e-4)


def test_logits_match_transformers(loaded, hf_model, pixels):
    model, tokenizer = loaded
    ids = np.array([[len(VOCAB), *tokenizer.encode_text("a small dog on the grass")]] * 3)
    ours = np.array(model(model.encode(mx.array(pixels[:3])), mx.array(ids)))
    theirs = reference.logits(hf_model, pixels[:3], ids)
    assert ours.shape == theirs.shape == (3, ids.shape[1], len(VOCAB) + 2)
    assert theirs.std() > 0.5  # logits with a spread: a near-constant output would pass too
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_cached_decoding_equals_the_full_forward(loaded, pixels):
    """The KV-cached step (one token at a time) gives the teacher-forced logits."""
    model, tokenizer = loaded
    decoder = model.decoder
    ids = mx.array([[len(VOCAB), *tokenizer.encode_text("two cats on a red car")]])
    image = model.encode(mx.array(pixels[:1]))
    full = decoder(ids, image)[0]
    memory = decoder.decoding_memory(image)
    cache = decoder.make_cache(1, 16)
    n = ids.shape[1]
    steps = [decoder.decode_step(ids[:, i : i + 1], memory, cache, i)[0] for i in range(n)]
    np.testing.assert_allclose(np.array(mx.concatenate(steps, 1)), np.array(full), atol=1e-5)


def test_sanitize_is_idempotent(hf_model):
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    once = BlipForConditionalGeneration.sanitize(state)
    twice = BlipForConditionalGeneration.sanitize(once)
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)
    assert once["vision_model.embeddings.patch_embedding.weight"].shape == (32, 16, 16, 3)
    assert not any(k.startswith("text_decoder.cls.predictions.decoder") for k in once)


# ----------------------------------------------------------------------------- processor, tokenizer


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
@pytest.mark.parametrize("size", [(97, 61), (400, 300), (384, 384)])
def test_processor_matches_transformers(loaded, mode, size):
    model, _ = loaded
    img = random_image(mode, size=size)
    ours = preprocess_image(img, model.config.vision.preprocess)
    theirs = image_processor()(images=img, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs.transpose(1, 2, 0), atol=1e-5)


TEXTS = [
    "A picture of two Cats sitting on the grass.",
    "a man,  next to a  RED car",
    "big dogs standing near the table's edge",
    "an unknownword here",
    "",
]


@pytest.mark.parametrize("vocab_files", [False, True])
def test_tokenizer_gives_transformers_ids_and_text(tmp_path, vocab_files):
    from transformers import AutoTokenizer

    folder = save_hf_blip(tmp_path / "hf", vocab_files=vocab_files, layers=1)
    assert (folder / "tokenizer.json").is_file() != vocab_files
    theirs = AutoTokenizer.from_pretrained(folder)
    model = conv.load_model(folder)
    ours = PretrainedTokenizer.from_folder(folder, model.decoder.special_tokens)
    assert ours.vocab_size == len(theirs) == len(VOCAB) + 2
    for text in TEXTS:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.encode_text(text) == ids
        row = [len(VOCAB), *ids, 102, 0, 0]
        assert ours.decode(row) == theirs.decode(row, skip_special_tokens=True)
    assert 100 in ours.encode_text("an unknownword")  # [UNK], as transformers maps it
    rows = ours.encode_batch(["Two dogs.", "a " * 40], max_length=8)
    assert rows[0].tolist() == [len(VOCAB), *theirs("two dogs")["input_ids"][1:], *[-1] * 4]
    assert rows[1, 0] == len(VOCAB) and rows[1, -1] == 102 and (rows[1] >= 0).all()


def test_tokenizer_refusals(tmp_path):
    model = conv.load_model(save_hf_blip(tmp_path / "hf", layers=1))
    with pytest.raises(UserError, match="no tokenizer"):
        PretrainedTokenizer.from_folder(tmp_path, model.decoder.special_tokens)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        PretrainedTokenizer.from_folder(tmp_path, model.decoder.special_tokens)


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
    prefix = [len(VOCAB), *(tokenizer.encode_text(prompt) if prompt else [])]
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
    texts = [tokenizer.decode([*prefix[1:], *t]) for t in theirs]
    assert [c.text for c in ours] == texts
    if prompt:
        assert all(c.text.startswith("a picture of") for c in ours)


@pytest.mark.parametrize("prompt", [None, "a picture of"])
@pytest.mark.parametrize(("early_stopping", "length_penalty"), [(True, 1.0), (False, 2.0)])
def test_beam_rules_match_transformers(
    loaded, hf_generate, pixels, prompt, early_stopping, length_penalty
):
    """All returned beams and their scores, with both stopping rules: the rules change the
    captions of some images (so each is exercised), and ours change them the same way."""
    model, tokenizer = loaded
    prefix = [len(VOCAB), *(tokenizer.encode_text(prompt) if prompt else [])]
    options = dict(num_beams=3, early_stopping=early_stopping, length_penalty=length_penalty)
    ours = generate(model, pixels, tokenizer, "beam", max_length=MAX_NEW, prompt=prompt, **options)
    theirs, scores = hf_generate(
        prefix, max_new_tokens=MAX_NEW, num_return_sequences=3, return_scores=True, **options
    )
    default, _ = hf_generate(
        prefix, num_beams=3, max_new_tokens=MAX_NEW, num_return_sequences=3, return_scores=True
    )
    assert theirs[::3] != default[::3], "the options should change some captions"
    for i, caption in enumerate(ours):
        beams = [caption, *caption.alternatives]
        assert [b.token_ids for b in beams] == theirs[3 * i : 3 * i + 3]
        np.testing.assert_allclose([b.score for b in beams], scores[3 * i : 3 * i + 3], atol=1e-4)


def test_attention_maps_over_the_patch_grid(loaded, pixels):
    model, tokenizer = loaded
    cap = generate(model, pixels[:2], tokenizer, max_length=6, return_attention=True)[0]
    assert cap.attention.shape == (len(cap.token_ids), 577)
    np.testing.assert_allclose(cap.attention.sum(-1), 1.0, atol=1e-5)
    assert cap.attention_grid().shape == (len(cap.token_ids), 24, 24)
    plain = generate(model, pixels[:2], tokenizer, max_length=6)[0]
    assert plain.token_ids == cap.token_ids


# ----------------------------------------------------------------------------- loading


def test_convert_and_load_by_folder_and_zoo_name(hf_folder, pixels, tmp_path, monkeypatch):
    record = conv.convert(hf_folder, tmp_path / "conv")
    out = tmp_path / "conv"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "convert.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    assert record["family"] == "blip"
    assert set(record["inputs"]) == {
        "config.json", "model.safetensors", "preprocessor_config.json", "generation_config.json",
        "tokenizer.json", "tokenizer_config.json",
    }  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "blip" and cfg["vision"]["preprocess"]["resize_mode"] == "exact"
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
    c, tok_c = conv.load_captioner("blip-base")
    assert calls == ["Salesforce/blip-image-captioning-base"]
    assert conv.is_converted(tmp_path / "hf_home" / "mlx-caption" / "blip-base")
    conv.load_captioner("blip-base")
    assert len(calls) == 1
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
    missing = {k: v for k, v in weights.items() if "layer.1.crossattention.self.key.bias" not in k}
    mx.save_safetensors(str(broken / "model.safetensors"), missing)
    refused(broken, "missing tensor", "crossattention.self.key.bias")

    wrong = dict(weights)
    wrong["text_decoder.bert.encoder.layer.0.intermediate.dense.weight"] = mx.zeros((65, 32))
    mx.save_safetensors(str(broken / "model.safetensors"), wrong)
    refused(broken, "intermediate.dense.weight", "(65, 32)")

    (broken / "model.safetensors").write_bytes(blob)
    (broken / "tokenizer.json").unlink()
    refused(broken, "no tokenizer")

    config = json.loads((hf_folder / "config.json").read_text())
    (broken / "config.json").write_text(
        json.dumps({**config, "architectures": ["BlipForQuestionAnswering"]})
    )
    refused(broken, "BlipForQuestionAnswering", "BlipForConditionalGeneration")
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    refused(broken, "unsupported architecture", "'llava'", "blip", "git", "clip")


def test_verify_against_transformers(hf_folder, tmp_path, capsys):
    args = ["convert", "--model", str(hf_folder), "--out", str(tmp_path / "v"), "--verify"]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["verify_max_abs_diff"] < 1e-4
    assert set(record["verify_outputs"]) == {"image_tokens", "logits"}


def test_caption_command_with_model_and_prompt(hf_folder, tmp_path, capsys):
    from PIL import Image

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
    assert all(r["caption"].startswith("a picture of") for r in rows)
    # The Python API takes the captioner by name or folder the same way.
    import mlx_caption

    api = mlx_caption.caption(paths, model=str(hf_folder), strategy="beam", num_beams=3,
                              prompt="a picture of")  # fmt: skip
    assert [c.text for c in api] == [c.text for c in want]
    # --checkpoint still works, and names what it takes.
    assert main(["caption", "--checkpoint", str(hf_folder), paths[0]]) == 0
    assert main(["caption", "--model", "no-such-model", paths[0]]) == 2
    assert "blip-base" in capsys.readouterr().err


def test_transformers_tokenizer_fixture_has_the_real_special_ids():
    tok = bert_tokenizer()
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]"]) == [
        0, 100, 101, 102, len(VOCAB),
    ]  # fmt: skip
    assert make_hf_blip(layers=1).config.text_config.bos_token_id == len(VOCAB)


def test_eval_page_and_serve_take_a_pretrained_captioner(hf_folder, tmp_path, capsys):
    from mlx_caption.app.captioning import Decoding, caption_image
    from mlx_caption.app.captioning import load_model as load_for_page
    from mlx_caption.data.synthetic import DATASET_FILE, write_synthetic_dataset

    data = tmp_path / "synth"
    write_synthetic_dataset(data, images=12, seed=1, size=40)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(hf_folder), "--data", str(data / DATASET_FILE), "--limit", "3"]
    argv += ["--split", "train", "--out", str(out), "--gallery", "2"]
    argv += ["--metrics-tokenizer", "python", "--json"]
    assert main([*argv, "--prompt", "a picture of"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["images"] == 3 and metrics["decoding"]["num_beams"] == 3
    preds = json.loads((out / "predictions.json").read_text())
    assert all(p["caption"].startswith("a picture of") for p in preds)
    assert (out / "gallery.html").read_text().count("<figure>") >= 2  # word heat maps

    loaded = load_for_page(str(hf_folder))
    assert loaded.grid == (24, 24) and loaded.max_length == 20
    result = caption_image(loaded, random_image("RGB", (200, 150)), Decoding(max_length=5))
    assert result.words and all(grid.shape == (24, 24) for _, grid in result.words)

    assert main(["serve", "--checkpoint", "blip-base", "--dry-run", "--json"]) == 0
    command = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["command"]
    assert command[-2:] == ["--checkpoint", "blip-base"]


def test_hub_id_of_a_pretrained_captioner_converts_into_the_cache(hf_folder, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, **kw):
        calls.append(repo_id)
        return str(hf_folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    model, tokenizer = conv.load_captioner("someone/blip-captioner")
    assert isinstance(model, BlipForConditionalGeneration)
    assert isinstance(tokenizer, PretrainedTokenizer)
    assert set(calls) == {"someone/blip-captioner"}
    assert conv.is_converted(tmp_path / "hf_home" / "mlx-caption" / "someone--blip-captioner")
