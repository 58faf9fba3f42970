"""`mlx-caption eval`: predictions in COCO format, metrics that match `score`, a gallery with maps."""

import json
from pathlib import Path

import pytest
from app_fixtures import tiny_checkpoint

from mlx_caption.cli import main
from mlx_caption.commands.eval import guess_format
from mlx_caption.data.preprocess import preprocess_paths
from mlx_caption.data.synthetic import DATASET_FILE, write_synthetic_dataset
from mlx_caption.errors import UserError
from mlx_caption.generate import DecodingConfig, generate
from mlx_caption.loading import load_captioner
from mlx_caption.metrics import score_captions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, images=40, seed=3, size=32)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, dataset) -> Path:
    data = json.loads((dataset / DATASET_FILE).read_text())
    train = [im for im in data["images"] if im["split"] == "train"][:8]
    images = [dataset / im["filepath"] / im["filename"] for im in train]
    caps = [im["sentences"][0]["raw"] for im in train]
    all_caps = [s["raw"] for im in data["images"] for s in im["sentences"]]
    return tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "model",
        captions=all_caps,
        images=images,
        image_captions=caps,
        steps=60,
    )


def _generated_for_test_split(dataset, checkpoint, **options) -> dict[int, str]:
    """``generate``'s captions of the test split's images, by image id: what eval owes."""
    data = json.loads((dataset / DATASET_FILE).read_text())
    test = [im for im in data["images"] if im["split"] == "test"]
    model, tok = load_captioner(checkpoint)
    paths = [dataset / im["filepath"] / im["filename"] for im in test]
    pixels = preprocess_paths(paths, model.config.vision.preprocess)
    captions = generate(model, pixels, tok, config=DecodingConfig(**options))
    return {im["imgid"]: c.text for im, c in zip(test, captions, strict=True)}


def _predictions(out: Path) -> dict[int, str]:
    return {p["image_id"]: p["caption"] for p in json.loads((out / "predictions.json").read_text())}


def test_eval_writes_predictions_metrics_and_gallery(tmp_path, dataset, checkpoint, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", str(dataset / DATASET_FILE)]
    argv += ["--split", "test", "--out", str(out), "--beam", "2", "--gallery", "3"]
    argv += ["--metrics-tokenizer", "python", "--json"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    preds = json.loads((out / "predictions.json").read_text())
    data = json.loads((dataset / DATASET_FILE).read_text())
    test_ids = {im["imgid"] for im in data["images"] if im["split"] == "test"}
    assert {p["image_id"] for p in preds} == test_ids
    assert all(isinstance(p["caption"], str) and p["caption"] for p in preds)
    assert metrics["images"] == len(test_ids)
    beam_2 = {"strategy": "beam", "num_beams": 2}
    assert _predictions(out) == _generated_for_test_split(dataset, checkpoint, **beam_2)

    # The metrics equal scoring the written predictions against the references directly.
    refs = {
        im["imgid"]: [s["raw"] for s in im["sentences"]]
        for im in data["images"]
        if im["imgid"] in test_ids
    }
    direct = score_captions(refs, {p["image_id"]: p["caption"] for p in preds}, tokenizer="python")
    assert metrics["all_references"]["CIDEr"] == pytest.approx(direct["CIDEr"], abs=1e-12)
    assert metrics["all_references"]["Bleu_4"] == pytest.approx(direct["Bleu_4"], abs=1e-12)
    # The agreement ceiling is computed on the same images and is far above a tiny model.
    assert metrics["reference_agreement"]["CIDEr"] > metrics["leave_one_out"]["CIDEr"]
    assert json.loads((out / "metrics.json").read_text())["images"] == metrics["images"]

    page = (out / "gallery.html").read_text()
    assert page.count('class="card"') == 3
    assert page.count("<figure>") >= 3  # one heat map per generated word
    assert "data:image/png;base64," in page


def test_eval_decoding_flags_reach_the_decoder(tmp_path, dataset, checkpoint, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", str(dataset / DATASET_FILE)]
    argv += ["--out", str(out), "--gallery", "0", "--metrics-tokenizer", "python", "--json"]
    argv += ["--beam", "1", "--max-length", "8", "--no-repeat-ngram", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    options = {"strategy": "greedy", "max_length": 8, "no_repeat_ngram_size": 1}
    predicted = _predictions(out)
    assert predicted == _generated_for_test_split(dataset, checkpoint, **options)
    # Eval's own default (beam search over 3, up to the decoder's length) says something else.
    default = {"strategy": "beam", "num_beams": 3}
    assert predicted != _generated_for_test_split(dataset, checkpoint, **default)


def test_eval_refuses_unknown_split(dataset, checkpoint, capsys):
    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(dataset / DATASET_FILE),
        "--split",
        "nope",
    ]
    assert main(argv) == 2
    assert "no images in split 'nope'" in capsys.readouterr().err


def test_guess_format(tmp_path, dataset):
    assert guess_format(dataset / DATASET_FILE) == "karpathy"
    coco = tmp_path / "captions_val2014.json"
    coco.write_text(json.dumps({"images": [], "annotations": []}))
    assert guess_format(coco) == "coco"
    (tmp_path / "x.token").write_text("a.jpg#0\ta cat\n")
    assert guess_format(tmp_path / "x.token") == "flickr"
    assert guess_format(tmp_path) == "folder"


def test_eval_decoding_defaults_to_beam_3_and_takes_sample():
    from mlx_caption.cli import build_parser
    from mlx_caption.commands._decoding import decoding_from_args

    def decoding(*flags):
        args = build_parser().parse_args(["eval", "--checkpoint", "c", "--data", "d", *flags])
        return decoding_from_args(args)

    assert (decoding()["strategy"], decoding()["num_beams"]) == ("beam", 3)
    assert decoding("--sample")["strategy"] == "sample"  # no need to write --beam 1 too
    assert decoding("--beam", "1")["strategy"] == "greedy"
    with pytest.raises(UserError, match="not both"):
        decoding("--sample", "--beam", "4")
