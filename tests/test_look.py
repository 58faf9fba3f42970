"""What training images look like (data/look.py), and where a checkpoint records it."""

import mlx_caption  # noqa: F401, I001  (loads the optimized BLAS before mlx.core)

import json

import numpy as np
import pytest
from PIL import Image

from mlx_caption.data.look import WHITE, ImageLook, background_of, measure_look
from mlx_caption.data.synthetic import OBJECT_DIAMETERS, random_scene, render_scene
from mlx_caption.loading import load_captioner, save_captioner
from mlx_caption.models.captioner import CaptionerConfig


def scene_image(i: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng([7, i])
    return render_scene(random_scene(rng), size, rng)


def test_background_of_a_synthetic_scene_is_its_grey_and_noise():
    # render_scene adds noise of deviation 7 to the scene's background colour (plus a gradient
    # that the neighbour difference cancels); the shapes are not background.
    for i in range(4):
        rng = np.random.default_rng([7, i])
        scene = random_scene(rng)
        colour, noise = background_of(render_scene(scene, 64, rng))
        assert np.abs(colour - np.array(scene["background"])).max() <= 4
        assert noise == pytest.approx(7.0, abs=0.4)


def test_flat_and_noisy_backgrounds():
    flat = Image.new("RGB", (48, 40), (255, 255, 255))
    colour, noise = background_of(flat)
    assert colour.tolist() == [255, 255, 255] and noise == 0.0
    rng = np.random.default_rng(0)
    noisy = np.clip(rng.normal(120, 10, (96, 96, 3)), 0, 255).round().astype(np.uint8)
    colour, noise = background_of(Image.fromarray(noisy))
    assert np.abs(colour - 120).max() <= 1
    assert noise == pytest.approx(10.0, abs=0.5)
    # No pixel is background (an image of two far-apart colours, no majority): no noise figure.
    halves = np.zeros((32, 32, 3), np.uint8)
    halves[::2] = 255
    assert background_of(Image.fromarray(halves))[1] is None


def test_measure_look_averages_the_images():
    images = [scene_image(i) for i in range(12)]
    look = measure_look(images, OBJECT_DIAMETERS)
    colours = np.array([background_of(im)[0] for im in images])
    assert look.background == tuple(int(round(c)) for c in colours.mean(axis=0))
    assert look.noise == pytest.approx(7.0, abs=0.4)
    assert look.size == 64 and look.images == 12
    assert dict(look.object_sizes) == {"small": 0.18, "large": 0.3}
    with pytest.raises(ValueError, match="no images"):
        measure_look([])


def test_image_look_round_trips_and_old_configs_load_without_it(tmp_path):
    from app_fixtures import tiny_checkpoint

    look = ImageLook(background=(81, 83, 80), noise=8.3, size=64,
                     object_sizes=(("small", 0.18), ("large", 0.3)), images=64)  # fmt: skip
    assert ImageLook.from_dict(json.loads(json.dumps(look.to_dict()))) == look
    with pytest.raises(ValueError, match="background"):
        ImageLook.from_dict({"background": [300, 0, 0]})

    old = tiny_checkpoint(tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    del config["image_look"]  # a checkpoint written before the field existed
    (old / "config.json").write_text(json.dumps(config))
    model, tokenizer = load_captioner(old)
    assert model.config.image_look is None

    model.config.image_look = look
    save_captioner(model, tokenizer, tmp_path / "new")
    assert load_captioner(tmp_path / "new")[0].config.image_look == look
    assert CaptionerConfig.from_dict(model.config.to_dict()).image_look == look
    assert WHITE.background == (255, 255, 255) and WHITE.noise == 0.0
