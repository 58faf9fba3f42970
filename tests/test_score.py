"""``mlx-caption score``: JSON and table output, refused inputs, Karpathy splits."""

import json
import subprocess
import sys

import pytest

from mlx_caption.cli import main
from mlx_caption.metrics import score_captions

REFS = {
    1: ["a brown dog runs on the grass", "a dog running", "the dog plays on a lawn"],
    2: ["two men ride bikes down a hill", "cyclists on a road", "two people riding bicycles"],
    3: ["a cat sleeps on a sofa", "a sleeping cat", "the kitten naps on a couch"],
}
PREDS = {1: "a dog runs on the grass", 2: "two men ride bicycles", 3: "a dog on a sofa"}


def _coco_refs(path, refs=REFS):
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in refs],
        "annotations": [
            {"image_id": i, "id": 10 * i + k, "caption": c}
            for i, caps in refs.items()
            for k, c in enumerate(caps)
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _preds(path, preds=PREDS):
    path.write_text(
        json.dumps([{"image_id": i, "caption": c} for i, c in preds.items()]), encoding="utf-8"
    )
    return path


def _karpathy(path):
    images = []
    for n, (i, caps) in enumerate(REFS.items()):
        images.append(
            {
                "filename": f"{i}.jpg",
                "imgid": n,
                "cocoid": 100 + i,
                "split": "test" if i != 3 else "train",
                "sentences": [{"raw": c, "tokens": c.split()} for c in caps],
            }
        )
    path.write_text(json.dumps({"images": images, "dataset": "coco"}), encoding="utf-8")
    return path


def test_score_json(tmp_path, capsys):
    refs, preds = _coco_refs(tmp_path / "refs.json"), _preds(tmp_path / "preds.json")
    code = main(
        ["score", "--refs", str(refs), "--preds", str(preds), "--tokenizer", "python", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = score_captions(REFS, PREDS, tokenizer="python")
    assert out["tokenizer"] == "ptb-python" and out["meteor_available"] is False
    assert out["images"] == 3 and out["METEOR"] is None
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]:
        assert out[key] == pytest.approx(expected[key], abs=1e-12), key
    assert 0 < out["Bleu_1"] < 1 and out["CIDEr"] > 0


def test_score_table(tmp_path, capsys):
    refs, preds = _coco_refs(tmp_path / "refs.json"), _preds(tmp_path / "preds.json")
    assert main(["score", "--refs", str(refs), "--preds", str(preds), "--tokenizer", "python"]) == 0
    out = capsys.readouterr().out
    assert "images: 3  tokenizer: ptb-python" in out
    assert "CIDEr" in out and "ROUGE_L" in out
    assert "METEOR   n/a" in out


def test_score_refuses_mismatched_sets(tmp_path, capsys):
    refs = _coco_refs(tmp_path / "refs.json", {i: REFS[1] for i in range(1, 10)})
    preds = _preds(tmp_path / "preds.json", {i: "a dog" for i in [1, 2, 3, 100, 101]})
    code = main(["score", "--refs", str(refs), "--preds", str(preds), "--tokenizer", "python"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "2 predicted image(s) have no references: 100, 101" in err
    assert "6 referenced image(s) have no prediction: 4, 5, 6, 7, 8, ..." in err


def test_score_refuses_duplicate_predictions(tmp_path, capsys):
    refs = _coco_refs(tmp_path / "refs.json")
    preds = tmp_path / "preds.json"
    rows = [{"image_id": i, "caption": c} for i, c in PREDS.items()]
    preds.write_text(json.dumps(rows + [{"image_id": 2, "caption": "again"}]))
    assert main(["score", "--refs", str(refs), "--preds", str(preds)]) == 2
    assert "more than one caption" in capsys.readouterr().err


def test_score_karpathy_split(tmp_path, capsys):
    refs = _karpathy(tmp_path / "dataset_coco.json")
    # Karpathy COCO entries are keyed by cocoid; string ids in the results file are fine.
    preds = _preds(tmp_path / "preds.json", {"101": PREDS[1], "102": PREDS[2]})
    args = ["score", "--refs", str(refs), "--preds", str(preds), "--tokenizer", "python"]
    assert main([*args, "--split", "test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = score_captions(
        {101: REFS[1], 102: REFS[2]}, {101: PREDS[1], 102: PREDS[2]}, tokenizer="python"
    )
    assert out["images"] == 2
    assert out["CIDEr"] == pytest.approx(expected["CIDEr"], abs=1e-12)
    # Without --split the train image 103 is referenced but not predicted.
    assert main(args) == 2
    assert "1 referenced image(s) have no prediction: 103" in capsys.readouterr().err
    assert main([*args, "--split", "val"]) == 2
    assert "no images in split 'val'" in capsys.readouterr().err


def test_score_missing_file(tmp_path, capsys):
    preds = _preds(tmp_path / "preds.json")
    assert main(["score", "--refs", str(tmp_path / "nope.json"), "--preds", str(preds)]) == 2
    assert "not found" in capsys.readouterr().err


def test_score_subprocess(tmp_path):
    refs, preds = _coco_refs(tmp_path / "refs.json"), _preds(tmp_path / "preds.json")
    cmd = [sys.executable, "-m", "mlx_caption.cli", "score", "--refs", str(refs)]
    proc = subprocess.run(
        [*cmd, "--preds", str(preds), "--tokenizer", "python", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tokenizer"] == "ptb-python" and out["images"] == 3
