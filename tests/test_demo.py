"""The main job end to end: `mlx-caption demo --quick` trains for real and beats a blind baseline."""

import json
from pathlib import Path

import pytest

from mlx_caption.cli import main
from mlx_caption.demo import demo_config


def test_demo_config_overrides_and_budget():
    quick, full = demo_config(quick=True), demo_config()
    assert quick.data.synthetic["images"] < full.data.synthetic["images"]
    assert quick.model.encoder == "scratch" and quick.model.encoder_mode == "finetune"
    assert demo_config(**{"optim.lr": 5e-4}).optim.lr == 5e-4
    assert quick.batch_size % quick.data.captions_per_image == 0


def test_demo_trains_its_scratch_encoder_at_the_decoders_lr():
    from mlx_caption.train.schedule import GROUPS, build_optimizer

    # Left unset, encoder_lr would default to lr / 10 (meant for pretrained encoders); the
    # demo's encoder starts from random weights and learns shapes in fewer steps at the
    # decoder's lr (the README's demo section has the 3-seed measurement).
    _, schedules = build_optimizer(demo_config().optim, total_steps=1400)
    assert set(schedules) == set(GROUPS)
    assert {s.peak for s in schedules.values()} == {demo_config().optim.lr}


@pytest.mark.slow
def test_demo_quick_beats_image_blind_baseline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) >= {"test", "reference_agreement", "objects", "minutes"}
    blind = summary["baseline"]
    # Caption metrics: clearly above the most common training caption given to every image.
    assert summary["test"]["CIDEr"] > 1.5 * blind["test"]["CIDEr"]
    assert summary["test"]["Bleu_4"] > blind["test"]["Bleu_4"]
    # Content: the model names more of the right (colour, shape) pairs than the blind caption.
    assert summary["objects"]["pair_recall"] > blind["objects"]["pair_recall"] + 0.1
    assert summary["objects"]["pair_precision"] > blind["objects"]["pair_precision"] + 0.1
    # The references agree with each other far more than with the blind caption. (The model
    # may score above their agreement: it writes the most common phrasing of each fact.)
    assert summary["reference_agreement"]["CIDEr"] > 3 * blind["test"]["CIDEr"]
    # Training ran the planned steps, or stopped early at the demo's hard time limit.
    training = summary["training"]
    assert training["steps"] <= training["planned_steps"]
    assert training["time_limit"] == (training["steps"] < training["planned_steps"])
    # What the demo leaves behind works with the other commands as it is.
    for name in ("model.safetensors", "config.json", "tokenizer.json", "state.json"):
        assert (out / "checkpoint" / name).is_file()
    # The web page's canvas draws on what the model was trained on.
    config = json.loads((out / "checkpoint" / "config.json").read_text())
    assert config["image_look"]["object_sizes"] == {"small": 0.18, "large": 0.3}
    assert config["image_look"]["size"] == 64
    assert (out / "eval" / "gallery.html").is_file()
    assert json.loads((out / "demo.json").read_text())["test"] == summary["test"]
    image = next((out / "train" / "data").glob("*/images/*.jpg"))
    assert main(["caption", "--checkpoint", str(out / "checkpoint"), str(image), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows[0]["caption"]


def test_synthetic_recipe_is_the_demo_recipe():
    import yaml

    from mlx_caption.demo import DEMO_RECIPE
    from mlx_caption.train.config import TrainConfig

    shipped = yaml.safe_load((Path(__file__).parents[1] / "configs" / "synthetic.yaml").read_text())
    # The yaml trains for a fixed number of epochs and evaluates on a schedule; the model,
    # data and optimizer sections are the demo's.
    for section in ("model", "data", "optim"):
        assert shipped[section] == DEMO_RECIPE[section], section
    assert shipped["batch_size"] == DEMO_RECIPE["batch_size"]
    TrainConfig.from_dict(shipped)
