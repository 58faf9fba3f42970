"""Annotation formats, path refusal, image validation and ``mlx-caption data check``."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import FLICKR8K, needs_flickr8k

from mlx_caption.cli import main
from mlx_caption.data.sources import (
    ImageValidator,
    LoadReport,
    inspect_image,
    load_records,
    validate_records,
)
from mlx_caption.errors import UserError

FLICKR_DIR = FLICKR8K


def _jpeg(path: Path, colour=(200, 30, 30), size=(24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")
    return path


def test_karpathy(tmp_path):
    root = tmp_path / "imgs"
    _jpeg(root / "val2014" / "a.jpg")
    _jpeg(root / "train2014" / "b.jpg")
    _jpeg(root / "train2014" / "c.jpg")
    data = {
        "images": [
            {
                "filepath": "val2014",
                "filename": "a.jpg",
                "split": "val",
                "cocoid": 7,
                "sentences": [
                    {"raw": "A cat .", "tokens": ["a", "cat"]},
                    {"tokens": ["a", "small", "cat"]},
                ],
            },
            {
                "filepath": "train2014",
                "filename": "b.jpg",
                "split": "restval",
                "imgid": 3,
                "sentences": [{"raw": "A dog."}],
            },
            {
                "filepath": "train2014",
                "filename": "c.jpg",
                "split": "train",
                "imgid": 4,
                "sentences": [],
            },
            {
                "filepath": "..",
                "filename": "escape.jpg",
                "split": "test",
                "sentences": [{"raw": "x"}],
            },
        ]
    }
    ann = tmp_path / "dataset_coco.json"
    ann.write_text(json.dumps(data))
    report = LoadReport()
    recs = load_records("karpathy", ann, root, report=report)
    assert [(r.id, r.split) for r in recs] == [(7, "val"), (3, "train")]
    assert recs[0].image == str((root / "val2014" / "a.jpg").resolve())
    assert recs[0].captions == ["A cat .", "a small cat"]
    assert report.refused == [("test", "../escape.jpg")]
    assert len(report.no_captions) == 1


@needs_flickr8k
def test_flickr_real_captions_and_split_files(tmp_path):
    lines = (FLICKR_DIR / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines()[:50]
    names = list(dict.fromkeys(line.split("#")[0] for line in lines))  # 10 images
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\nbroken line\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:6]) + "\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("\n".join(names[6:8]) + "\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text(names[8] + "\n")
    root = tmp_path / "images"
    for name in names[:9]:
        _jpeg(root / name)
    report = LoadReport()
    recs = load_records("flickr", tmp_path / "Flickr8k.token.txt", root, report=report)
    assert len(recs) == 10
    assert all(len(r.captions) == 5 for r in recs)
    assert recs[0].captions[0] == lines[0].split("\t")[1]
    assert recs[0].id == Path(names[0]).stem
    splits = [r.split for r in recs]
    assert splits == ["train"] * 6 + ["val"] * 2 + ["test", "train"]  # unlisted -> train
    assert report.unlisted == 1 and report.bad_rows == 1
    dropped = load_records("flickr", tmp_path / "Flickr8k.token.txt", root, unlisted="drop")
    assert len(dropped) == 9
    valid = validate_records(recs, ImageValidator())
    assert len(valid.ok) == 9 and valid.missing == [9]


def test_coco_split_from_name(tmp_path):
    _jpeg(tmp_path / "im" / "1.jpg")
    _jpeg(tmp_path / "im" / "2.jpg")
    data = {
        "images": [
            {"id": 1, "file_name": "1.jpg"},
            {"id": 2, "file_name": "2.jpg"},
            {"id": 3, "file_name": "/etc/passwd"},
        ],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "a red square"},
            {"image_id": 2, "id": 11, "caption": "a blue square"},
            {"image_id": 1, "id": 12, "caption": "a square that is red"},
            {"image_id": 3, "id": 13, "caption": "secret"},
        ],
    }
    ann = tmp_path / "captions_val2014.json"
    ann.write_text(json.dumps(data))
    report = LoadReport()
    recs = load_records("coco", ann, tmp_path / "im", report=report)
    assert [(r.id, r.split, len(r.captions)) for r in recs] == [(1, "val", 2), (2, "val", 1)]
    assert report.refused == [("val", "/etc/passwd")]
    assert load_records("coco", ann, tmp_path / "im", split="test")[0].split == "test"


def test_captions_only_needs_no_images(tmp_path):
    # For scoring: no image folder, image paths kept as written, nothing refused.
    data = {
        "images": [
            {
                "filepath": "..",
                "filename": "escape.jpg",
                "split": "restval",
                "imgid": 1,
                "sentences": [{"raw": "A dog."}],
            },
            {
                "filepath": "val2014",
                "filename": "a.jpg",
                "split": "dev",
                "cocoid": 7,
                "sentences": [{"raw": "A cat."}],
            },
            {"split": "test", "sentences": [{"raw": "no file name"}]},
        ]
    }
    ann = tmp_path / "dataset_coco.json"
    ann.write_text(json.dumps(data))
    missing = tmp_path / "no-images-here"
    report = LoadReport()
    recs = load_records("karpathy", ann, missing, captions_only=True, report=report)
    assert [(r.id, r.split, r.image) for r in recs] == [
        (1, "train", "../escape.jpg"),
        (7, "val", "val2014/a.jpg"),
    ]
    assert report.refused == [] and report.bad_rows == 1
    assert report.split_names == {"restval", "dev"}  # as written, before the aliases
    with pytest.raises(UserError, match="image folder not found"):
        load_records("karpathy", ann, missing)
    # An already parsed file is not read again.
    ann.write_text("not JSON")
    assert load_records("karpathy", ann, captions_only=True, parsed_json=data) == recs


def test_captions_only_flickr_and_coco(tmp_path):
    token = tmp_path / "captions.token"
    token.write_text("/abs/a.jpg#0\tA dog.\nsub/b.jpg#0\tA cat.\nsub/b.jpg#1\tA kitten.\n")
    recs = load_records("flickr", token, captions_only=True)
    assert [(r.id, r.image, r.captions) for r in recs] == [
        ("a", "/abs/a.jpg", ["A dog."]),
        ("b", "sub/b.jpg", ["A cat.", "A kitten."]),
    ]
    data = {
        "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 3, "file_name": "/etc/passwd"}],
        "annotations": [
            {"image_id": 3, "id": 13, "caption": "kept: nothing is opened"},
            {"image_id": 1, "id": 10, "caption": "a red square"},
        ],
    }
    ann = tmp_path / "captions_val2014.json"
    ann.write_text(json.dumps(data))
    report = LoadReport()
    recs = load_records("coco", ann, captions_only=True, report=report)
    assert [(r.id, r.split, r.image) for r in recs] == [
        (1, "val", "1.jpg"),
        (3, "val", "/etc/passwd"),
    ]
    assert report.refused == []


def test_csv_grouped_custom_columns(tmp_path):
    root = tmp_path / "pics"
    _jpeg(root / "x.jpg")
    _jpeg(root / "sub" / "y.jpg")
    with (tmp_path / "caps.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "text", "split"])
        w.writerow(["x.jpg", "first caption", "val"])
        w.writerow(["sub/y.jpg", "other image", "train"])
        w.writerow(["x.jpg", "second caption", "val"])
        w.writerow(["../../outside.jpg", "nope", "train"])
    report = LoadReport()
    recs = load_records(
        "csv",
        tmp_path / "caps.csv",
        root,
        image_column="file",
        caption_column="text",
        report=report,
    )
    assert [(r.id, r.split, r.captions) for r in recs] == [
        ("x", "val", ["first caption", "second caption"]),
        ("sub/y", "train", ["other image"]),
    ]
    assert len(report.refused) == 1
    with pytest.raises(UserError, match="no column"):
        load_records("csv", tmp_path / "caps.csv", root)


def test_jsonl_lists_and_bad_lines(tmp_path):
    _jpeg(tmp_path / "a.png")
    rows = [
        json.dumps({"image": "a.png", "caption": ["one", "two"], "id": "A"}),
        "not json",
        json.dumps({"image": "a.png", "caption": "three"}),
    ]
    (tmp_path / "caps.jsonl").write_text("\n".join(rows))
    report = LoadReport()
    recs = load_records("jsonl", tmp_path / "caps.jsonl", tmp_path, split="test", report=report)
    assert len(recs) == 1 and recs[0].captions == ["one", "two", "three"]
    assert recs[0].id == "A" and recs[0].split == "test"
    assert report.bad_rows == 1


def test_folder_and_symlink_refused(tmp_path):
    root = tmp_path / "data"
    _jpeg(root / "train" / "a.jpg")
    (root / "train" / "a.txt").write_text("a red thing\n\na second caption\n")
    _jpeg(root / "val" / "b.jpg")
    (root / "val" / "b.txt").write_text("b caption\n")
    _jpeg(root / "loose.jpg")  # no captions
    outside = _jpeg(tmp_path / "secret" / "s.jpg")
    os.symlink(outside, root / "train" / "link.jpg")
    (root / "train" / "link.txt").write_text("leaks\n")
    report = LoadReport()
    recs = load_records("folder", None, root, report=report)
    assert [(r.id, r.split, r.captions) for r in recs] == [
        ("train/a", "train", ["a red thing", "a second caption"]),
        ("val/b", "val", ["b caption"]),
    ]
    assert report.refused == [("train", "train/link.jpg")]
    assert len(report.no_captions) == 1


def test_validation_counts_and_cache(tmp_path):
    good = _jpeg(tmp_path / "good.jpg")
    trunc = tmp_path / "trunc.jpg"
    big = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(big, quality=90)
    trunc.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("L", (8, 8), 100).save(tmp_path / "gray.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    assert inspect_image(str(good)).native
    assert inspect_image(str(trunc)).status == "corrupt"
    assert inspect_image(str(tmp_path / "text.jpg")).status == "corrupt"
    assert inspect_image(str(tmp_path / "nope.jpg")).status == "missing"
    gray = inspect_image(str(tmp_path / "gray.png"))
    assert gray.ok and not gray.native
    assert not inspect_image(str(tmp_path / "rgba.png")).native

    cache = tmp_path / "verdicts.json"
    v = ImageValidator(cache_file=cache)
    paths = [str(good), str(trunc), str(tmp_path / "text.jpg"), str(tmp_path / "nope.jpg")]
    assert [x.status for x in v.check_many(paths)] == ["ok", "corrupt", "corrupt", "missing"]
    assert len(json.loads(cache.read_text())) == 3  # missing files are not remembered
    # A fresh validator reads the verdicts back without reopening the images.
    v2 = ImageValidator(cache_file=cache)
    assert v2.check(str(trunc)).status == "corrupt"
    # Fixing the file (new size/mtime) is noticed.
    trunc.write_bytes(big.read_bytes())
    assert v2.check(str(trunc)).status == "ok"


def _data_set(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    for name in ["a.jpg", "b.jpg", "c.jpg"]:
        _jpeg(root / name)
    (root / "d.jpg").write_bytes(b"\xff\xd8\xff garbage")
    lines = [
        "a.jpg#0\tA dog runs .",
        "a.jpg#1\tA brown dog runs on the grass .",
        "b.jpg#0\tTwo children",
        "c.jpg#0\tA man rides a bike down a long hill .",
        "d.jpg#0\tcorrupt",
        "e.jpg#0\tmissing",
        "../x.jpg#0\trefused",
    ]
    (root / "caps.token.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.testImages.txt").write_text("c.jpg\n")
    return root


def test_data_check_cli(tmp_path, capsys):
    root = _data_set(tmp_path)
    args = [
        "data",
        "check",
        "--format",
        "flickr",
        "--annotations",
        str(root / "caps.token.txt"),
        "--images",
        str(root),
    ]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert (train["images"], train["captions"]) == (2, 3)
    assert (train["missing"], train["corrupt"], train["refused"]) == (1, 1, 1)
    assert train["caption_words"] == {"p5": 2, "p50": 3, "p95": 7, "max": 7}
    assert test["images"] == 1 and test["caption_words"]["max"] == 9
    assert report["total"]["images"] == 3
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "train" in text and "missing" in text and "corrupt" in text


def test_data_check_nothing_usable(tmp_path, capsys):
    (tmp_path / "caps.txt").write_text("gone.jpg#0\ta caption\n")
    rc = main(
        [
            "data",
            "check",
            "--format",
            "flickr",
            "--annotations",
            str(tmp_path / "caps.txt"),
            "--images",
            str(tmp_path),
            "--json",
        ]
    )
    assert rc == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["usable"] is False
    assert (
        main(["data", "check", "--format", "coco", "--annotations", str(tmp_path / "none.json")])
        == 2
    )  # UserError


def test_data_check_subprocess(tmp_path):
    root = _data_set(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_caption.cli",
            "data",
            "check",
            "--format",
            "flickr",
            "--annotations",
            str(root / "caps.token.txt"),
            "--images",
            str(root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["total"]["corrupt"] == 1


def test_csv_pipe_delimited_flickr30k_style(tmp_path):
    _jpeg(tmp_path / "1000092795.jpg")
    (tmp_path / "results.csv").write_text(
        "image_name| comment_number| comment\n"
        "1000092795.jpg| 0| Two young guys with shaggy hair look at their hands .\n"
        "1000092795.jpg| 1| Two young , White males are outside near many bushes .\n"
    )
    recs = load_records(
        "csv",
        tmp_path / "results.csv",
        tmp_path,
        image_column="image_name",
        caption_column="comment",
    )
    assert len(recs) == 1 and len(recs[0].captions) == 2
    assert recs[0].captions[1] == "Two young , White males are outside near many bushes ."
