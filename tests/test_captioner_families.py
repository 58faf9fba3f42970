"""The pretrained captioner families (BLIP, GIT, ViT-GPT2) against transformers, each test run
for every family of ``captioner_fixtures.CAPTIONERS`` on random-initialised checkpoints of the
real architectures saved with ``save_pretrained``: every vision layer, the image tokens and
the logits, the processor, the tokenizer, greedy and beam-search captions token for token
(prompted and not), conversion and its refusals, the zoo rows, the commands, the page and the
API, attention maps, and fine-tuning (whole model or decoder only, exact resume, and a tiny
random model that learns the synthetic shapes). What only one family has is in
``test_git.py`` and ``test_vit_gpt2.py``, or at the end here where it needs these fixtures.
"""

import functools
import json
import math
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from captioner_fixtures import CAPTIONERS, SHAPE_WORDS, save_hf_captioner
from mlx.utils import tree_flatten
from prerequisites import require_module
from test_preprocess import random_image
from train_fixtures import learn_the_shapes, quiet, recipe, train_lines

import mlx_caption
from mlx_caption import hub, zoo
from mlx_caption import loading as conv
from mlx_caption.cli import main
from mlx_caption.data.preprocess import preprocess_image
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.errors import UserError
from mlx_caption.generate import generate
from mlx_caption.models.registry import FAMILIES
from mlx_caption.pretrained_tokenizer import PretrainedTokenizer
from mlx_caption.tokens import NO_TOKEN
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.schedule import group_sizes
from mlx_caption.train.trainer import Trainer

torch = require_module("torch", "the [torch] extra")

IMAGES = 8
MAX_NEW = 20
PROMPT = "a picture of"


def weights(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=list(CAPTIONERS))
def family(request):
    return CAPTIONERS[request.param]


@pytest.fixture(scope="module")
def reference(family):
    return FAMILIES[family.name].reference_module()


@pytest.fixture(scope="module")
def hf_folder(family, tmp_path_factory):
    return save_hf_captioner(tmp_path_factory.mktemp(family.name) / "hf", family.name)


@pytest.fixture(scope="module")
def hf_model(reference, hf_folder):
    return reference.load_model(hf_folder)


@pytest.fixture(scope="module")
def hf_tokenizer(hf_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_folder)


@pytest.fixture(scope="module")
def special(family, hf_model):
    """The start, end and pad ids, as transformers' config has them."""
    return family.special_ids(hf_model.config)


@pytest.fixture(scope="module")
def loaded(hf_folder):
    return conv.load_captioner(hf_folder)


@pytest.fixture(scope="module")
def pixels(family):
    size = family.image_size
    return np.random.default_rng(0).standard_normal((IMAGES, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def hf_generate(reference, hf_model, pixels):
    """transformers' ``generate`` on :func:`pixels`, each setting run once per family."""
    done = {}

    def run(prefix, **options):
        key = (tuple(prefix), tuple(sorted(options.items())))
        if key not in done:
            done[key] = reference.generate(hf_model, pixels, prefix, **options)
        return done[key]

    return run


def prefix_of(special, tokenizer, prompt):
    """The ids a caption starts from: the start token, then the prompt's."""
    return [special[0], *(tokenizer.encode_text(prompt) if prompt else [])]


# ----------------------------------------------------------------------------- the network


def test_vision_tower_every_layer_and_the_image_tokens_match(
    family, loaded, hf_model, reference, pixels
):
    model, _ = loaded
    out = model.encoder(mx.array(pixels[:2]), output_hidden_states=True)
    with torch.no_grad():
        ref = family.hf_vision(hf_model)(
            pixel_values=reference.pixel_values(pixels[:2]), output_hidden_states=True
        )
        image_tokens = family.hf_image_tokens(hf_model, ref.last_hidden_state)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(np.array(ours), theirs.numpy(), atol=1e-4)
    # After the last norm (GIT's post_layernorm on every token): the grid the decoder reads.
    np.testing.assert_allclose(
        np.array(out.last_hidden_state), ref.last_hidden_state.numpy(), atol=1e-4
    )
    if out.pooler_output is not None:
        np.testing.assert_allclose(
            np.array(out.pooler_output), ref.pooler_output.numpy(), atol=1e-4
        )
    tokens = model.encode(mx.array(pixels[:2]))
    assert tokens.shape == (2, family.tokens, 32)  # the decoder's width (ViT-GPT2: projected)
    np.testing.assert_allclose(np.array(tokens), image_tokens.numpy(), atol=1e-4)


def test_logits_match_transformers(loaded, hf_model, hf_tokenizer, reference, pixels, special):
    model, tokenizer = loaded
    ids = np.array([[special[0], *tokenizer.encode_text("a small dog on the grass")]] * 3)
    ours = np.array(model(model.encode(mx.array(pixels[:3])), mx.array(ids)))
    theirs = reference.logits(hf_model, pixels[:3], ids)
    assert ours.shape == theirs.shape == (3, ids.shape[1], len(hf_tokenizer))
    assert theirs.std() > 0.5  # logits with a spread: a near-constant output would pass too
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # The image decides: another image gives other logits.
    assert np.abs(theirs[0] - reference.logits(hf_model, pixels[3:4], ids[:1])[0]).max() > 1.0


def test_cached_decoding_equals_the_full_forward(loaded, pixels, special):
    """The KV-cached step (one token at a time, over the image's memory computed once) gives
    the teacher-forced logits, with two rows (beams) reading one image's memory."""
    model, tokenizer = loaded
    decoder = model.decoder
    ids = mx.array([[special[0], *tokenizer.encode_text("two cats on a red car")]] * 2)
    image = model.encode(mx.array(pixels[:1]))
    full = model(image, ids[:1])
    memory = decoder.decoding_memory(image)
    cache = decoder.make_cache(2, 16)
    n = ids.shape[1]
    steps = [decoder.decode_step(ids[:, i : i + 1], memory, cache, i)[0] for i in range(n)]
    stepped = np.array(mx.concatenate(steps, 1))
    np.testing.assert_allclose(stepped[0], np.array(full[0]), atol=1e-5)
    np.testing.assert_allclose(stepped[1], stepped[0], atol=1e-6)


def test_sanitize_is_idempotent_and_the_reference_inverts_it(family, hf_model, reference):
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    sanitize = FAMILIES[family.name].model_class.sanitize
    once = sanitize({**state, **family.legacy_buffers(2)})
    twice = sanitize(once)
    assert once.keys() == twice.keys()
    assert all(np.array_equal(once[k], twice[k]) for k in once)
    assert {k: once[k].shape for k in family.sanitized} == family.sanitized
    for key in family.transposed:
        np.testing.assert_array_equal(once[key], state[key].T)
    assert not [k for k in once if any(f in k for f in family.not_sanitized)]
    back = reference.to_hf_state(once, list(state))
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


# ----------------------------------------------------------------------------- processor, tokenizer

PROCESSORS = [(f.name, variant) for f in CAPTIONERS.values() for variant in f.processors]


@functools.cache
def processors(name: str, variant: str):
    """Our preprocessing read from the hub's ``preprocessor_config.json``, and transformers'
    processor that wrote it."""
    fam = CAPTIONERS[name]
    theirs = fam.processors[variant](fam.image_size)
    family = FAMILIES[name]
    config = json.loads(family.reference_module().hf_config(family.config_class()).to_json_string())
    cfg = family.config_class.from_hf(config, json.loads(theirs.to_json_string()))
    return cfg.vision.preprocess, theirs


@pytest.mark.parametrize(("name", "variant"), PROCESSORS)  # GIT: git-base-coco's and git-base's
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
@pytest.mark.parametrize("size", [(97, 61), (400, 300), (300, 400), "square"])
def test_processor_matches_transformers(name, variant, mode, size):
    """What the checkpoint's preprocessor_config.json says is what runs. ViT's processor
    leaves grayscale and CMYK as they are (and then fails on them) unless asked to convert;
    ours always converts to RGB, so the reference is asked to."""
    ours, theirs = processors(name, variant)
    side = CAPTIONERS[name].image_size
    img = random_image(mode, size=(side, side) if size == "square" else size)
    want = theirs(images=img, do_convert_rgb=True, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(preprocess_image(img, ours), want.transpose(1, 2, 0), atol=1e-5)
    assert ours.image_mean == pytest.approx(tuple(theirs.image_mean))


TEXTS = [
    "A picture of two Cats sitting on the grass.",
    "a man,  next to a  RED car",
    "big dogs standing near the table's edge",
    "an unknownword here: ünïcode ✓",
    "",
]


@pytest.mark.parametrize("vocab_files", [False, True])
def test_tokenizer_gives_transformers_ids_and_text(family, tmp_path, vocab_files):
    from transformers import AutoConfig, AutoTokenizer

    folder = save_hf_captioner(
        tmp_path / "hf", family.name, vocab_files=vocab_files, layers=1, image_size=32
    )
    assert (folder / "tokenizer.json").is_file() != vocab_files
    theirs = AutoTokenizer.from_pretrained(folder)
    start, end, pad = family.special_ids(AutoConfig.from_pretrained(folder))
    model = conv.load_model(folder)
    ours = PretrainedTokenizer.from_folder(folder, model.decoder.special_tokens)
    assert ours.vocab_size == len(theirs) == model.decoder.vocab_size
    for text in TEXTS:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.encode_text(text) == ids
        row = [start, *ids, end, pad, pad]
        text = theirs.decode(row, skip_special_tokens=True).strip()
        assert ours.decode(row[1:]) == text  # generated ids: after the start token
        if start != end:  # a start token that is not the end token is skipped too
            assert ours.decode(row) == text
    unk = family.token_ids.get("[UNK]")
    if unk is not None:  # as transformers maps it
        assert unk in ours.encode_text("an unknownword")
    rows = ours.encode_batch(["Two dogs.", "a " * 40], max_length=8)
    want = [start, *theirs("two dogs", add_special_tokens=False)["input_ids"], end]
    assert rows[0].tolist() == [*want, *[NO_TOKEN] * (8 - len(want))]  # not the pad id
    assert rows[1, 0] == start and rows[1, -1] == end and (rows[1] >= 0).all()


def test_tokenizer_refusals(loaded, tmp_path):
    special_tokens = loaded[0].decoder.special_tokens
    with pytest.raises(UserError, match="no tokenizer"):
        PretrainedTokenizer.from_folder(tmp_path, special_tokens)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        PretrainedTokenizer.from_folder(tmp_path, special_tokens)


def test_fixture_has_the_real_special_ids(family, hf_tokenizer, special, loaded):
    """The fixture's tokenizer and config put the special tokens where the hub's do, and
    our model reads them from there."""
    n = len(hf_tokenizer)
    want = {token: i if i >= 0 else n + i for token, i in family.token_ids.items()}
    assert {t: hf_tokenizer.convert_tokens_to_ids(t) for t in want} == want
    assert special == tuple(want[token] for token in family.start_end_pad)
    tokens = loaded[0].decoder.special_tokens
    assert (tokens.start, tokens.end, tokens.pad) == ((special[0],), special[1], special[2])


# ----------------------------------------------------------------------------- generation


def _top2_gap(hf_model, reference, pixels, prefix, generated, position):
    """transformers' gap between its two best next tokens after ``generated[:position]``."""
    ids = np.array([[*prefix, *generated[:position]]])
    logits = reference.logits(hf_model, pixels[None], ids)[0, -1].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    top = np.sort(logp)[-2:]
    return top[1] - top[0]


def _compare(ours, theirs, scores, hf_model, reference, pixels, prefix):
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
            gap = _top2_gap(hf_model, reference, pixels[i], prefix, b, where)
        else:
            gap = abs(a.score - scores[i])
        assert gap <= 1e-5, f"image {i}: ours {a.token_ids}, transformers {b} (gap {gap:.3g})"
        ties.append(i)
    return ties


@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize("beams", [1, 2, 3, 4])
def test_captions_match_transformers_generate(
    family, loaded, hf_model, reference, hf_generate, pixels, special, prompt, beams
):
    model, tokenizer = loaded
    prefix = prefix_of(special, tokenizer, prompt)
    strategy = "greedy" if beams == 1 else "beam"
    ours = generate(
        model, pixels, tokenizer, strategy, num_beams=beams, max_length=MAX_NEW, prompt=prompt
    )
    theirs, scores = hf_generate(
        prefix, num_beams=beams, max_new_tokens=MAX_NEW, num_return_sequences=beams,
        return_scores=True,
    )  # fmt: skip
    theirs, scores = theirs[::beams], (scores and scores[::beams])
    ties = _compare(ours, theirs, scores, hf_model, reference, pixels, prefix)
    assert len(ties) <= 1, f"transformers' top-2 scores tie for images {ties}"
    # Long enough to exercise the search: captions that end and captions cut at the limit.
    lengths = [len(c.token_ids) for c in ours]
    assert min(lengths) < MAX_NEW and max(lengths) == MAX_NEW
    assert sum(c.finished for c in ours) >= 2
    # The image decides the caption.
    assert len({tuple(c.token_ids) for c in ours}) >= family.min_distinct_captions
    texts = [tokenizer.decode([*prefix[1:], *t]) for t in theirs]
    assert [c.text for c in ours] == texts
    if prompt:
        assert all(c.text.startswith(PROMPT) for c in ours)


@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize(("early_stopping", "length_penalty"), [(True, 1.0), (False, 2.0)])
def test_beam_rules_match_transformers(
    loaded, hf_generate, pixels, special, prompt, early_stopping, length_penalty
):
    """All returned beams and their scores, with both stopping rules: the rules change the
    captions of some images (so each is exercised), and ours change them the same way."""
    model, tokenizer = loaded
    prefix = prefix_of(special, tokenizer, prompt)
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


def test_attention_maps_over_the_patch_grid(family, loaded, pixels):
    """Cross-attention maps sum to 1 over the image; GIT has none: its map is a text token's
    self-attention over the image tokens, averaged over layers and heads (it sums to below
    1: the rest is on the text)."""
    model, tokenizer = loaded
    cap = generate(model, pixels[:2], tokenizer, max_length=6, return_attention=True)[0]
    assert cap.attention.shape == (len(cap.token_ids), family.tokens)
    sums = cap.attention.sum(-1)
    if family.attention_sums_to_one:
        np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    else:
        assert (sums > 0.0).all() and (sums <= 1.0 + 1e-5).all()
    assert cap.attention_grid().shape == (len(cap.token_ids), *family.grid)
    plain = generate(model, pixels[:2], tokenizer, max_length=6)[0]
    assert plain.token_ids == cap.token_ids


# ----------------------------------------------------------------------------- loading


def _at(config: dict, path: str):
    for key in path.split("."):
        config = config[key]
    return config


def test_convert_and_load_by_folder_and_zoo_name(
    family, hf_folder, loaded, pixels, tmp_path, monkeypatch
):
    record = conv.convert(hf_folder, tmp_path / "conv")
    out = tmp_path / "conv"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "convert.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    assert record["family"] == family.name
    assert set(record["inputs"]) == {
        "config.json", "model.safetensors", "preprocessor_config.json", "generation_config.json",
        "tokenizer.json", "tokenizer_config.json",
    }  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert {path: _at(cfg, path) for path in family.converted} == family.converted
    a, tok_a = loaded
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
    c, tok_c = conv.load_captioner(family.zoo_name)
    assert calls == [family.hub_id]
    assert conv.is_converted(tmp_path / "hf_home" / "mlx-caption" / family.zoo_name)
    conv.load_captioner(family.zoo_name)
    assert len(calls) == 1
    caps_c = generate(c, pixels[:3], tok_c, "beam", num_beams=3)
    assert [x.token_ids for x in caps_c] == [x.token_ids for x in caps_a]


def test_pytorch_bin_with_old_buffers_converts(
    family, hf_model, hf_folder, loaded, tmp_path, pixels
):
    """Older checkpoints (nlpconnect's among them) are a pytorch_model.bin, some with
    buffers that sanitize drops."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for path in hf_folder.iterdir():
        if path.name != "model.safetensors":
            (folder / path.name).write_bytes(path.read_bytes())
    buffers = {k: torch.from_numpy(v) for k, v in family.legacy_buffers(2).items()}
    torch.save({**hf_model.state_dict(), **buffers}, folder / "pytorch_model.bin")
    model, tokenizer = conv.load_captioner(folder)
    want = generate(loaded[0], pixels[:2], tokenizer, "beam", num_beams=2)
    ours = generate(model, pixels[:2], tokenizer, "beam", num_beams=2)
    assert [c.token_ids for c in ours] == [c.token_ids for c in want]


def test_conversion_refusals_leave_nothing(family, hf_folder, tmp_path, capsys):
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

    weights_ = dict(mx.load(str(hf_folder / "model.safetensors")))
    missing = {k: v for k, v in weights_.items() if family.missing_tensor not in k}
    assert len(missing) < len(weights_)
    mx.save_safetensors(str(broken / "model.safetensors"), missing)
    refused(broken, "missing tensor", family.missing_tensor)

    key, shape, reported = family.wrong_shape
    mx.save_safetensors(str(broken / "model.safetensors"), {**weights_, key: mx.zeros(shape)})
    refused(broken, key, reported)

    (broken / "model.safetensors").write_bytes(blob)
    (broken / "tokenizer.json").unlink()
    refused(broken, "no tokenizer")
    (broken / "tokenizer.json").write_bytes((hf_folder / "tokenizer.json").read_bytes())

    config = json.loads((hf_folder / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(family.other_architecture(config)))
    refused(broken, *family.other_architecture_says)
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    refused(broken, "unsupported architecture", "'llava'", "blip", "git", "clip")


def test_verify_against_transformers(hf_folder, tmp_path, capsys):
    args = ["convert", "--model", str(hf_folder), "--out", str(tmp_path / "v"), "--verify"]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["verify_max_abs_diff"] < 1e-4
    assert set(record["verify_outputs"]) == {"image_tokens", "logits"}


def test_hub_id_converts_into_the_cache(family, hf_folder, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, **kw):
        calls.append(repo_id)
        return str(hf_folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    model, tokenizer = conv.load_captioner("someone/captioner")
    assert isinstance(model, FAMILIES[family.name].model_class)
    assert isinstance(tokenizer, PretrainedTokenizer)
    assert set(calls) == {"someone/captioner"}
    assert conv.is_converted(tmp_path / "hf_home" / "mlx-caption" / "someone--captioner")


# ----------------------------------------------------------------------------- commands, page


def test_caption_eval_serve_page_and_api(family, hf_folder, loaded, tmp_path, capsys):
    from PIL import Image

    from mlx_caption.app.captioning import Decoding, caption_image
    from mlx_caption.app.captioning import load_model as load_for_page
    from mlx_caption.data.synthetic import DATASET_FILE

    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        random_image("RGB", (120, 90), seed=i).save(path)
        paths.append(str(path))
    args = ["caption", "--model", str(hf_folder), *paths, "--json"]
    assert main([*args, "--prompt", PROMPT, "--beam", "3"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, tokenizer = loaded
    pixels = np.stack(
        [preprocess_image(Image.open(p), model.config.vision.preprocess) for p in paths]
    )
    want = generate(model, pixels, tokenizer, "beam", num_beams=3, prompt=PROMPT)
    assert [r["caption"] for r in rows] == [c.text for c in want]
    assert all(r["caption"].startswith(PROMPT) for r in rows)
    # The Python API takes the captioner by name or folder the same way.
    api = mlx_caption.caption(paths, model=str(hf_folder), strategy="beam", num_beams=3,
                              prompt=PROMPT)  # fmt: skip
    assert [c.text for c in api] == [c.text for c in want]
    # --checkpoint still works, and a wrong name is told what there is.
    assert main(["caption", "--checkpoint", str(hf_folder), paths[0]]) == 0
    assert main(["caption", "--model", "no-such-model", paths[0]]) == 2
    assert family.zoo_name in capsys.readouterr().err

    data = tmp_path / "synth"
    write_synthetic_dataset(data, images=12, seed=1, size=40)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(hf_folder), "--data", str(data / DATASET_FILE), "--limit", "3"]
    argv += ["--split", "train", "--out", str(out), "--gallery", "2"]
    argv += ["--metrics-tokenizer", "python", "--json"]
    assert main([*argv, "--prompt", PROMPT]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["images"] == 3 and metrics["decoding"]["num_beams"] == 3
    preds = json.loads((out / "predictions.json").read_text())
    assert all(p["caption"].startswith(PROMPT) for p in preds)
    assert (out / "gallery.html").read_text().count("<figure>") >= 2  # word heat maps

    page = load_for_page(str(hf_folder))
    # The length slider goes one past the default (20 new tokens).
    assert page.grid == family.grid and page.max_length == 21
    result = caption_image(page, random_image("RGB", (200, 150)), Decoding(max_length=5))
    assert result.words and all(grid.shape == family.grid for _, grid in result.words)

    assert main(["serve", "--checkpoint", family.zoo_name, "--dry-run", "--json"]) == 0
    command = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["command"]
    assert command[-2:] == ["--checkpoint", family.zoo_name]


# ----------------------------------------------------------------------------- the zoo

# Per zoo row: its hub id; transformers' parameter count for the hub's config (the LM head's
# weight is the word embedding: counted once, as torch's parameters() does), so a wrong row
# shows up here; image tokens; the processor as the hub has it; and the COCO Karpathy-test
# scores its authors published (BLEU-4, CIDEr, a fragment of the source) or None.
_BLIP_PAPER = "arXiv:2201.12086"
_GIT_REPO = "GenerativeImage2Text"
ZOO_ROWS = {
    "blip-base": (
        "Salesforce/blip-image-captioning-base", 223_971_644, 577,
        "squash 384, bicubic, CLIP mean/std", (39.7, 133.3, _BLIP_PAPER),
    ),
    "blip-large": (
        "Salesforce/blip-image-captioning-large", 446_290_492, 577,
        "squash 384, bicubic, CLIP mean/std", (40.4, 136.7, _BLIP_PAPER),
    ),
    # git-base ships ImageNet's mean/std, the fine-tuned checkpoints CLIP's.
    "git-base": (
        "microsoft/git-base", 176_619_066, 197,
        "resize 224, crop 224, bicubic, ImageNet mean/std", None,
    ),
    "git-base-coco": (
        "microsoft/git-base-coco", 176_619_066, 197,
        "resize 224, crop 224, bicubic, CLIP mean/std", (None, 131.35, _GIT_REPO),
    ),
    "git-base-textcaps": (
        "microsoft/git-base-textcaps", 176_619_066, 197,
        "resize 224, crop 224, bicubic, CLIP mean/std", None,
    ),
    "git-large-coco": (
        "microsoft/git-large-coco", 394_196_026, 257,
        "resize 224, crop 224, bicubic, CLIP mean/std", (None, 138.45, _GIT_REPO),
    ),
    # ViT-B/16 with its pooler, GPT-2 small with cross-attention.
    "vit-gpt2": (
        "nlpconnect/vit-gpt2-image-captioning", 239_195_904, 197,
        "squash 224, bilinear, mean/std 0.5", None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", [e.name for e in zoo.entries("captioner")])
def test_zoo_rows_are_complete(name):
    entry = zoo.ZOO[name]
    hub_id, params, tokens, preprocess, published = ZOO_ROWS[name]
    cfg = entry.make_config()
    assert (entry.kind, entry.hub_id, type(cfg)) == (
        "captioner", hub_id, FAMILIES[entry.family].config_class,
    )  # fmt: skip
    with torch.device("meta"):
        hf = FAMILIES[entry.family].reference_module().random_model(cfg)
    assert conv.count_parameters(cfg) == params == sum(p.numel() for p in hf.parameters())
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    row = entry.describe()
    assert row["tokens"] == tokens == cfg.vision.num_tokens and row["preprocess"] == preprocess
    if published is None:
        assert entry.published is None
    else:
        bleu4, cider, source = published
        assert (entry.published.bleu4, entry.published.cider) == (bleu4, cider)
        assert source in entry.published.source and row["published"]["cider"] == cider


# ----------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("shapes"), images=120, seed=0, size=32)


@pytest.fixture(scope="module")
def start_folder(family, tmp_path_factory) -> Path:
    """A tiny model as transformers initialises it (``family.tiny``: 32-px images, 8-px
    patches, 17 tokens) over the synthetic captions' words."""
    folder = tmp_path_factory.mktemp(f"{family.name}_start") / "hf"
    return save_hf_captioner(folder, family.name, words=SHAPE_WORDS, perturb=False, **family.tiny)


@pytest.fixture(scope="module")
def learner_folder(family, start_folder, tmp_path_factory) -> Path:
    if not family.learner:
        return start_folder
    folder = tmp_path_factory.mktemp(f"{family.name}_learner") / "hf"
    kwargs = {**family.tiny, **family.learner}
    return save_hf_captioner(folder, family.name, words=SHAPE_WORDS, perturb=False, **kwargs)


def start_recipe(shapes: Path, folder: Path, tmp: Path, **over) -> dict:
    d = recipe(shapes, tmp / "cache", **over)
    d["model"] = {"init_from": str(folder), "encoder_mode": d["model"]["encoder_mode"]}
    return d


def test_whole_model_trains_resumes_exactly_and_checkpoints_load_back(
    family, shapes, start_folder, tmp_path
):
    """Every part trains (the encoder at the encoder's rate) but what never does; a run
    stopped mid-epoch resumes to the same losses and weights; checkpoints load back as the
    family's model with its tokenizer."""
    cfg = TrainConfig.from_dict(start_recipe(shapes, start_folder, tmp_path, epochs=1))
    model_class = FAMILIES[family.name].model_class
    straight = Trainer.from_recipe(cfg, tmp_path / "A", progress=False, log=quiet)
    assert isinstance(straight.model, model_class)
    sizes = group_sizes(straight.model)
    assert sizes["encoder_decay"] > 0 and sizes["decay"] > 0  # the encoder: encoder lr
    start = weights(straight.model.parameters())
    assert straight.fit().status == "finished"

    first = Trainer.from_recipe(cfg, tmp_path / "B", progress=False, log=quiet)
    assert first.fit(stop_at_step=3).status == "stopped"  # batch 3 of 6
    resumed = Trainer.from_recipe(
        cfg, tmp_path / "B", resume=tmp_path / "B", progress=False, log=quiet
    )
    assert resumed.fit().status == "finished"
    a, b = train_lines(tmp_path / "A"), train_lines(tmp_path / "B")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    wa, wb = weights(straight.model.parameters()), weights(resumed.model.parameters())
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-4, err_msg=k)
    moved = [k for k in wa if not np.array_equal(wa[k], start[k])]
    for part in (family.encoder_blocks, *family.decoder_parts):
        assert any(k.startswith(part) for k in moved), part
    assert not [k for k in moved if any(f in k for f in family.never_trained)]

    model, tokenizer = conv.load_captioner(tmp_path / "A" / "ckpt-6")
    assert isinstance(model, model_class)
    assert tokenizer.encode_text("a red circle") == resumed.tokenizer.encode_text("a red circle")
    for k, v in weights(model.parameters()).items():
        np.testing.assert_array_equal(v, wa[k])
    record = json.loads((tmp_path / "A" / "ckpt-6" / "convert.json").read_text())
    assert record["family"] == family.name and record["source_kind"] == "fine-tuned"


def test_decoder_only_leaves_the_encoder_and_caches_its_grids(
    family, shapes, start_folder, tmp_path
):
    """The decoder side (with a projection of the image tokens, where there is one) trains
    from the encoder's grids in the feature cache; the encoder does not move."""
    d = start_recipe(
        shapes, start_folder, tmp_path, **{"model.encoder_mode": "frozen", "epochs": 1}
    )
    trainer = Trainer.from_recipe(
        TrainConfig.from_dict(d), tmp_path / "run", progress=False, log=quiet
    )
    model = trainer.model
    assert group_sizes(model)["encoder_decay"] == 0
    encoder, start = weights(model.encoder.parameters()), weights(model.parameters())
    assert trainer.fit().status == "finished"
    after = weights(model.encoder.parameters())
    assert all(np.array_equal(encoder[k], after[k]) for k in encoder)
    end = weights(model.parameters())
    moved = [k for k in end if not np.array_equal(end[k], start[k])]
    for part in family.decoder_parts:
        assert any(k.startswith(part) for k in moved), part
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 2  # train + val grids


LEARNS = [(f.name, mode) for f in CAPTIONERS.values() for mode in f.learns]


@pytest.mark.parametrize(("family", "mode"), LEARNS, indirect=["family"])
def test_finetuned_tiny_captioner_learns_the_shapes(family, learner_folder, mode, tmp_path):
    """A randomly initialised captioner, fine-tuned for 400 steps (the whole model, or the
    decoder only), describes the synthetic shapes far better than the image-blind caption."""
    lr, encoder_lr = family.learns[mode]
    d = {
        "model": {"init_from": str(learner_folder), "encoder_mode": mode},
        "data": {"synthetic": {"images": 400, "size": 32, "seed": 0}, "max_length": 40},
        "optim": {"lr": lr, "encoder_lr": encoder_lr, "warmup_steps": 20, "min_lr_ratio": 0.1},
        # Captions cut at 19 tokens, as BLIP's pair-F1 margin was set with them (a 20th token
        # of its tiny model's unfinished captions adds wrong pairs).
        "eval": {"batch_size": 40, "val_images": 40, "metrics_tokenizer": "python",
                 "every_steps": 100, "max_length": 19},
        "checkpoint": {"every_steps": 1000},
        "epochs": 40,  # 400 steps of 32 images
        "batch_size": 32,
        # Dropout draws depend on the step's split over CPU streams; the pair-F1 margins
        # were set on one stream.
        "cpu_streams": 1,
        "label_smoothing": 0.0,
        "log_every": 10,
    }  # fmt: skip
    label = f"{family.name} fine-tune ({mode})"
    trainer, result, blind = learn_the_shapes(d, tmp_path / "run", label)
    last = result.last_eval
    assert last["CIDEr"] > 1.5 * blind["CIDEr"]
    ratio, margin = family.pair_f1_over_blind
    assert last["pair_f1"] > ratio * blind["pair_f1"] + margin
    assert math.isfinite(result.best["value"])
    best, _ = conv.load_captioner(tmp_path / "run" / "best")
    assert isinstance(best, FAMILIES[family.name].model_class)
    if result.best["step"] == result.step:  # the best is the last: the same weights
        final = weights(trainer.model.parameters())
        assert all(np.array_equal(v, final[k]) for k, v in weights(best.parameters()).items())


# ----------------------------------------------------------------------------- default length

# These call transformers' generate with no length on purpose: its default is what is tested.
DEFAULT_LENGTH_WARNING = "ignore:Using the model-agnostic default `max_length`:UserWarning"


@pytest.mark.filterwarnings(DEFAULT_LENGTH_WARNING)
def test_default_length_comes_from_the_generation_config(
    family, loaded, hf_model, reference, pixels, special
):
    """Without options both sides decode greedily, 20 new tokens at most (transformers'
    default when the generation config sets no length)."""
    model, tokenizer = loaded
    ours = generate(model, pixels, tokenizer)
    theirs = reference.generate(hf_model, pixels, [special[0]])
    assert [c.token_ids for c in ours] == theirs
    assert max(len(t) for t in theirs) == 20


@pytest.fixture(scope="module")
def endless_folder(family, tmp_path_factory):
    """A tiny checkpoint of the family whose captions never end: each runs to the length
    limit, so the limit shows in every caption's length."""
    folder = tmp_path_factory.mktemp(f"{family.name}_endless") / "hf"
    return save_hf_captioner(folder, family.name, end_bias=-50.0, **family.tiny)


# Where a checkpoint's config.json keeps its decoder's settings (GIT's are its top level).
TEXT_SECTION = {"blip": "text_config", "git": None, "vit_gpt2": "decoder"}
# What a checkpoint sets, and the new tokens transformers' generate then makes (n: the
# prompt's tokens). GIT and ViT-GPT2 read generation_config.json, or config.json when there
# is none (its decoder section filling the top level's gaps); a max_length counts the start
# token and the prompt. BLIP reads neither: its text decoder's own generation config has no
# length, so 20 new tokens.
LENGTH_CASES = {
    "generation max_length": ({"max_length": 30}, {}, lambda n: (20, 29 - n, 29 - n)),
    "generation max_new_tokens": ({"max_new_tokens": 12}, {}, lambda n: (20, 12, 12)),
    "no generation config": (None, {}, lambda n: (20, 20, 20)),
    "config.json max_length": (None, {"top": 30}, lambda n: (20, 29 - n, 29 - n)),
    "config.json decoder max_length": (None, {"text": 30}, lambda n: (20, 29 - n, 29 - n)),
    "both, generation config first": ({}, {"top": 30, "text": 30}, lambda n: (20, 20, 20)),
}


def with_lengths(base: Path, folder: Path, family, generation, config_lengths) -> Path:
    """A copy of the checkpoint at ``base`` whose generation_config.json sets ``generation``
    (None: no generation_config.json) and whose config.json sets ``max_length`` where
    ``config_lengths`` says (``top``: the top level, ``text``: the decoder's section)."""
    shutil.copytree(base, folder)
    generation_file = folder / "generation_config.json"
    if generation is None:
        generation_file.unlink()
    else:
        generation_file.write_text(
            json.dumps({**json.loads(generation_file.read_text()), **generation})
        )
    config = json.loads((folder / "config.json").read_text())
    for where, length in config_lengths.items():
        section = TEXT_SECTION[family.name] if where == "text" else None
        (config[section] if section else config)["max_length"] = length
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.filterwarnings(DEFAULT_LENGTH_WARNING)
@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize("case", list(LENGTH_CASES))
def test_default_length_follows_transformers(
    family, reference, endless_folder, case, prompt, tmp_path
):
    """A checkpoint's own length, wherever it keeps it, gives our captions transformers'
    length, token for token, with a prompt and without."""
    generation, config_lengths, new_tokens = LENGTH_CASES[case]
    folder = with_lengths(endless_folder, tmp_path / "hf", family, generation, config_lengths)
    model, tokenizer = conv.load_captioner(folder)
    hf_model = reference.load_model(folder)
    prefix = prefix_of(family.special_ids(hf_model.config), tokenizer, prompt)
    size = family.tiny["image_size"]
    pixels = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype(np.float32)
    theirs = reference.generate(hf_model, pixels, prefix)
    ours = generate(model, pixels, tokenizer, prompt=prompt)
    assert [c.token_ids for c in ours] == theirs
    want = dict(zip(("blip", "git", "vit_gpt2"), new_tokens(len(prefix) - 1), strict=True))
    assert [len(t) for t in theirs] == [want[family.name]] * 2


@pytest.mark.parametrize("family", ["git"], indirect=True)
def test_a_prompt_that_fills_the_checkpoints_max_length_is_refused(
    family, endless_folder, tmp_path
):
    """transformers refuses a prompt that leaves nothing of a checkpoint's max_length to
    generate (its start token and the prompt's 3 tokens fill 4); so do we, unless the call
    sets a length."""
    folder = with_lengths(endless_folder, tmp_path / "hf", family, {"max_length": 4}, {})
    model, tokenizer = conv.load_captioner(folder)
    pixels = np.zeros((1, *(family.tiny["image_size"],) * 2, 3), np.float32)
    with pytest.raises(UserError, match="set max_length"):
        generate(model, pixels, tokenizer, prompt=PROMPT)
    assert len(generate(model, pixels, tokenizer, prompt=PROMPT, max_length=2)[0].token_ids) == 2


def test_a_converted_folder_keeps_its_length(family, loaded):
    """A folder converted before the length followed transformers keeps what it says."""
    config = loaded[0].config
    written = {**config.to_dict(), "max_new_tokens": 19}
    del written["length_counts_prompt"]
    again = type(config).from_dict(written)
    assert (again.max_new_tokens, again.length_counts_prompt) == (19, False)


# ----------------------------------------------------------------------------- one family's


@pytest.mark.parametrize("family", ["vit_gpt2"], indirect=True)
def test_vit_gpt2_config_reads_the_checkpoint(family, loaded, special):
    model, _ = loaded
    cfg = model.config
    assert cfg.vision.hidden_size == 48 and cfg.text.n_embd == 32 and cfg.projects
    assert cfg.vision.num_tokens == 197 and cfg.vision.preprocess.resample == "bilinear"
    assert cfg.vision.preprocess.image_mean == (0.5, 0.5, 0.5)
    assert (cfg.text.decoder_start_token_id, cfg.text.eos_token_id) == special[:2]
    assert cfg.text.pad_token_id == special[1] and cfg.max_new_tokens == 20  # transformers'
    assert model.decoder.special_tokens.unk is None  # GPT-2's unk is its end token
