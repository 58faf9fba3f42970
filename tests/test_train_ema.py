"""The weights' moving average (``optim.ema``): the arithmetic, checkpoints, resume, eval."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from train_fixtures import quiet, recipe, tiny_captioner

import mlx_caption  # noqa: F401  (loads the BLAS before mlx.core)
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.errors import UserError
from mlx_caption.loading import load_captioner
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.ema import TRAINING_WEIGHTS_FILE, WeightAverage
from mlx_caption.train.evaluation import evaluate_captioner
from mlx_caption.train.trainer import Trainer


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return write_synthetic_dataset(root, images=120, seed=0, size=32)


def trainable(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.trainable_parameters())}


def test_average_follows_the_weights_with_a_warming_decay():
    model = tiny_captioner()
    model.freeze_encoder()  # the average covers what trains, not the frozen encoder
    average = WeightAverage(model, 0.5)
    expected = trainable(model)
    assert set(average.weights()) == set(expected)
    assert not any(k.startswith("encoder.") for k in expected)
    rng = np.random.default_rng(0)
    for n in range(30):
        new = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in expected.items()}
        model.load_weights([(k, mx.array(v)) for k, v in new.items()], strict=False)
        average.update(model, n)
        d = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18, ..., then 0.5 from n = 8
        expected = {k: d * expected[k] + (1 - d) * new[k] for k in expected}
    assert average.decay_at(0) == pytest.approx(0.1) and average.decay_at(1000) == 0.5
    for k, v in average.weights().items():
        np.testing.assert_allclose(np.array(v), expected[k], rtol=1e-5, atol=1e-6, err_msg=k)

    own = trainable(model)
    with average.applied(model):
        for k, v in trainable(model).items():
            np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-6)
    for k, v in trainable(model).items():
        np.testing.assert_array_equal(v, own[k])


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_decay_outside_0_1_is_refused(shapes, tmp_path, decay):
    cfg = TrainConfig.from_dict(recipe(shapes, tmp_path / "cache", **{"optim.ema": decay}))
    with pytest.raises(UserError, match="optim.ema"):
        Trainer.from_recipe(cfg, tmp_path / "run", progress=False, log=quiet)


def test_checkpoints_hold_the_average_and_resume_continues_it(shapes, tmp_path):
    d = recipe(shapes, tmp_path / "cache", **{"optim.ema": 0.8})
    cfg = TrainConfig.from_dict(d)
    straight = Trainer.from_recipe(cfg, tmp_path / "A", progress=False, log=quiet)
    assert straight.fit().status == "finished"
    own, averaged = trainable(straight.model), straight.ema.weights()
    # The checkpoint's model is the average (what caption/eval/serve load); its training
    # weights are the model's own.
    loaded, _ = load_captioner(tmp_path / "A" / "ckpt-18")
    in_file = dict(tree_flatten(loaded.parameters()))
    for k, v in averaged.items():
        np.testing.assert_array_equal(np.array(in_file[k]), np.array(v), err_msg=k)
    saved = mx.load(str(tmp_path / "A" / "ckpt-18" / TRAINING_WEIGHTS_FILE))
    assert set(saved) == set(own)
    for k, v in saved.items():
        np.testing.assert_array_equal(np.array(v), own[k], err_msg=k)
    assert any(not np.allclose(own[k], np.array(averaged[k])) for k in own)

    first = Trainer.from_recipe(cfg, tmp_path / "B", progress=False, log=quiet)
    assert first.fit(stop_at_step=9).status == "stopped"
    resumed = Trainer.from_recipe(
        cfg, tmp_path / "B", resume=tmp_path / "B", progress=False, log=quiet
    )
    assert resumed.fit().status == "finished"
    for k, v in trainable(resumed.model).items():
        np.testing.assert_allclose(v, own[k], atol=1e-4, err_msg=k)
    for k, v in resumed.ema.weights().items():
        np.testing.assert_allclose(np.array(v), np.array(averaged[k]), atol=1e-4, err_msg=k)


def test_validation_scores_the_average(shapes, tmp_path):
    d = recipe(shapes, tmp_path / "cache", **{"optim.ema": 0.9, "epochs": 1})
    trainer = Trainer.from_recipe(TrainConfig.from_dict(d), tmp_path / "run", log=quiet)
    assert trainer.fit().status == "finished"

    def val_loss() -> float:
        return evaluate_captioner(
            trainer.model,
            trainer.tokenizer,
            trainer.data.val_batches(),
            from_features=False,
            max_length=d["data"]["max_length"],
            label_smoothing=trainer.cfg.label_smoothing,
            generate_captions=False,
        )["val_loss"]

    with trainer.ema.applied(trainer.model):
        averaged = val_loss()
    own = val_loss()
    assert averaged != pytest.approx(own)
    assert trainer.state.history[-1]["val_loss"] == pytest.approx(averaged)
