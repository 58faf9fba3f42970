"""Synthetic shapes data set: determinism, format, captions, scoring."""

import json

import numpy as np
import pytest
from PIL import Image

from mlx_caption.cli import main
from mlx_caption.data.synthetic import (
    COLOURS,
    SHAPES,
    blind_baseline_caption,
    load_scenes,
    parse_caption,
    score_objects,
    write_synthetic_dataset,
)
from mlx_caption.errors import UserError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    path = write_synthetic_dataset(out, images=60, seed=3)
    return path, json.loads(path.read_text())


def test_deterministic_per_seed(tmp_path, dataset):
    path, _ = dataset
    # Drawn by two processes in blocks: the same bytes as one process in order.
    again = write_synthetic_dataset(tmp_path / "a", images=60, seed=3, workers=2)
    assert again.read_bytes() == path.read_bytes()
    for name in ["000000.jpg", "000029.jpg", "000059.jpg"]:
        assert (again.parent / "images" / name).read_bytes() == (
            path.parent / "images" / name
        ).read_bytes()
    other = write_synthetic_dataset(tmp_path / "b", images=60, seed=4)
    assert other.read_bytes() != path.read_bytes()


def test_max_objects_one_gives_single_shapes(tmp_path, dataset):
    _, default = dataset
    singles = write_synthetic_dataset(tmp_path / "one", images=30, seed=3, max_objects=1)
    data = json.loads(singles.read_text())
    assert {e["scene"]["count"] for e in data["images"]} == {1}
    assert data["generator"]["max_objects"] == 1 and default["generator"]["max_objects"] == 3
    assert {e["scene"]["count"] for e in default["images"]} == {1, 2, 3}
    with pytest.raises(UserError, match="max-objects"):
        write_synthetic_dataset(tmp_path / "none", images=3, max_objects=0)


def test_karpathy_format_and_splits(dataset):
    path, data = dataset
    images = data["images"]
    assert len(images) == 60
    splits = [e["split"] for e in images]
    assert splits.count("train") == 48 and splits.count("val") == 6 and splits.count("test") == 6
    for e in images:
        assert (path.parent / e["filepath"] / e["filename"]).is_file()
        assert len(e["sentences"]) == 5
        raws = [s["raw"] for s in e["sentences"]]
        assert len(set(raws)) == 5  # five different phrasings
        assert e["sentids"] == [s["sentid"] for s in e["sentences"]]
        assert all(
            s["tokens"] == s["raw"].replace(",", "").replace(":", "").split()
            for s in e["sentences"]
        )
        scene = e["scene"]
        assert scene["count"] == len(scene["objects"]) in (1, 2, 3)
        pairs = {(o["colour"], o["shape"]) for o in scene["objects"]}
        assert len(pairs) == scene["count"]
        for o in scene["objects"]:
            assert o["colour"] in COLOURS and o["shape"] in SHAPES
            # Every caption states every object with its colour and size.
            for raw in raws:
                assert f"{o['size']} {o['colour']} {o['shape']}" in raw


def test_pixels_show_the_scene(dataset):
    path, data = dataset
    for e in data["images"][:20]:
        img = np.asarray(Image.open(path.parent / "images" / e["filename"]).convert("RGB"))
        assert img.shape == (64, 64, 3)
        for o in e["scene"]["objects"]:
            y, x = int(o["y"] * 64), int(o["x"] * 64)
            centre = img[y, x].astype(int)
            want = np.array(COLOURS[o["colour"]])
            assert np.abs(centre - want).max() < 40, (e["filename"], o, centre)


def test_generated_captions_score_perfectly(dataset):
    _, data = dataset
    scenes = {e["imgid"]: e["scene"] for e in data["images"]}
    for k in range(5):
        caps = {e["imgid"]: e["sentences"][k]["raw"] for e in data["images"]}
        scores = score_objects(caps, scenes)
        assert scores["exact"] == 1.0, (k, scores)


SCENE = {
    "layout": "pair_horizontal",
    "count": 2,
    "objects": [
        {"colour": "red", "shape": "circle", "size": "large", "position": "left"},
        {"colour": "blue", "shape": "triangle", "size": "small", "position": "right"},
    ],
}
ROW = {
    "layout": "row",
    "count": 3,
    "objects": [
        {"colour": "green", "shape": "star", "size": "small", "position": "left"},
        {"colour": "yellow", "shape": "square", "size": "large", "position": "middle"},
        {"colour": "white", "shape": "circle", "size": "small", "position": "right"},
    ],
}


def test_score_hand_written_right_and_wrong():
    right = "a large red circle to the left of a small blue triangle"
    s = score_objects({1: right}, {1: SCENE})
    assert s["pair_recall"] == s["pair_precision"] == 1.0
    assert s["size_accuracy"] == s["position_accuracy"] == s["count_accuracy"] == 1.0
    # Swapped places, wrong size of one, an extra object, a missing one.
    wrong = "a large blue triangle to the left of a large red circle and a green star"
    s = score_objects({1: wrong}, {1: SCENE})
    assert s["pair_recall"] == 1.0
    assert s["pair_precision"] == pytest.approx(2 / 3)
    assert s["size_accuracy"] == 0.5  # red circle large (right), blue triangle large (wrong)
    assert s["position_accuracy"] == 0.0
    assert s["count_accuracy"] == 0.0  # three mentioned, two there
    assert s["exact"] == 0.0
    s = score_objects({1: "two shapes: a red square and a blue triangle"}, {1: SCENE})
    assert s["pair_recall"] == 0.5 and s["pair_precision"] == 0.5
    assert s["count_accuracy"] == 1.0
    assert s["size_accuracy"] == 0.0 and s["position_accuracy"] == 0.0  # none stated
    # Averaged over images, keys compared as strings.
    s = score_objects({"1": right, 2: "a white circle"}, {1: SCENE, "2": ROW})
    assert s["images"] == 2
    assert s["pair_recall"] == pytest.approx(3 / 5)
    assert s["pair_precision"] == 1.0


def test_parse_places():
    p = parse_caption(
        "a small white circle on the right, a large yellow square in the center "
        "and a small green star on the left"
    )
    assert [(o["colour"], o["position"]) for o in p["objects"]] == [
        ("white", "right"),
        ("yellow", "middle"),
        ("green", "left"),
    ]
    p = parse_caption(
        "a small green star above a large yellow square, which is above a white circle"
    )
    assert [o["position"] for o in p["objects"]] == ["top", "middle", "bottom"]
    p = parse_caption("on the left a red circle, on the right a blue triangle")
    assert [o["position"] for o in p["objects"]] == ["left", "right"]
    p = parse_caption("three shapes in a row: a green star, a yellow square, a white circle")
    assert [o["position"] for o in p["objects"]] == ["left", "middle", "right"]
    assert p["count"] == 3
    assert parse_caption("a single big purple star")["objects"][0]["size"] == "large"
    assert parse_caption("")["objects"] == []


def test_blind_baseline_far_below(dataset):
    _, data = dataset
    train = [s["raw"] for e in data["images"] if e["split"] == "train" for s in e["sentences"]]
    blind = blind_baseline_caption(train)
    assert blind in {" ".join(t.replace(",", "").replace(":", "").split()) for t in train}
    scenes = load_scenes(dataset[0], split="test")
    assert len(scenes) == 6
    truth = {e["imgid"]: e["sentences"][0]["raw"] for e in data["images"] if e["split"] == "test"}
    good = score_objects(truth, scenes)
    bad = score_objects({k: blind for k in scenes}, scenes)
    assert good["pair_f1"] == 1.0
    assert bad["pair_f1"] < 0.4 and bad["exact"] < 0.5
    with pytest.raises(UserError):
        blind_baseline_caption([])


def test_synth_cli(tmp_path, capsys):
    rc = main(
        [
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--images",
            "12",
            "--seed",
            "1",
            "--size",
            "32",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 12 and summary["captions"] == 60
    assert summary["splits"] == {"train": 10, "val": 1, "test": 1}
    assert Image.open(tmp_path / "s" / "images" / "000011.jpg").size == (32, 32)
    assert main(["synth", "--out", str(tmp_path / "t"), "--images", "0"]) == 2
    one = ["synth", "--out", str(tmp_path / "u"), "--images", "6", "--max-objects", "1"]
    assert main(one) == 0
    data = json.loads((tmp_path / "u" / "dataset_synthetic.json").read_text())
    assert {e["scene"]["count"] for e in data["images"]} == {1}
    assert main([*one[:-1], "4"]) == 2
