"""The training loop: a recipe in, checkpoints, logs and a trained captioner out.

:func:`build_parts` turns a recipe and its data (:mod:`.data`) into what a run trains: the
model (from scratch, the zoo, a converted folder or ``init_from``), its tokenizer, the AdamW
groups and schedules (:mod:`.schedule`) and the compiled step (:mod:`.step`).
:class:`Trainer` receives those parts and runs epochs: it logs every ``log_every`` steps,
evaluates (:mod:`.evaluation`) after each epoch or every K steps, checkpoints
(:mod:`.checkpoint`) every K steps, keeps the best by validation CIDEr, stops cleanly on
Ctrl-C/SIGTERM (a checkpoint first) and on a NaN/inf loss (no checkpoint: the last good one
stays). :meth:`Trainer.from_recipe` does both for the CLI.

Encoder modes: ``frozen`` (the encoder never runs in the step: its token grids come from
``data/features.py``'s cache, so an epoch costs the projector and decoder only) and
``finetune`` (the whole encoder or its last N blocks train at their own lr, optionally with
gradient checkpointing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten
from tqdm import tqdm

from mlx_caption.errors import UserError
from mlx_caption.loading import at_image_size, load_captioner, load_encoder, write_model_files
from mlx_caption.models.base import CaptionerParts
from mlx_caption.models.captioner import Captioner, CaptionerConfig
from mlx_caption.models.decoder import DECODER_PRESETS, DecoderConfig
from mlx_caption.models.registry import encoder_config_from_dict
from mlx_caption.train.checkpoint import (
    NonFiniteWeights,
    TrainState,
    mark_best,
    read_state,
    resolve_checkpoint,
    restore_optimizer,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mlx_caption.train.config import TrainConfig, TrainModelConfig
from mlx_caption.train.data import TrainData
from mlx_caption.train.distributed import World, agree, barrier, init_world
from mlx_caption.train.ema import TRAINING_WEIGHTS_FILE, WeightAverage, save_training_weights
from mlx_caption.train.evaluation import evaluate_captioner
from mlx_caption.train.logs import CURVES_FILE, METRICS_FILE, MetricsLog, WandbLogger, plot_curves
from mlx_caption.train.schedule import Schedule, build_optimizer, group_sizes
from mlx_caption.train.step import TrainStep

__all__ = ["Diverged", "TrainParts", "TrainResult", "Trainer", "build_captioner", "build_parts"]


class Diverged(RuntimeError):
    """The loss or gradient became NaN/inf: training stops, no checkpoint is written."""


@dataclass
class TrainResult:
    """How a :meth:`Trainer.fit` call ended."""

    status: str  # "finished" | "time_limit" | "interrupted" | "stopped" | "diverged"
    step: int
    epoch: int
    out_dir: str
    checkpoint: str | None = None  # the last checkpoint written (or kept, if diverged)
    best: dict | None = None
    last_eval: dict | None = None
    message: str = ""
    train_seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- the parts


@dataclass
class TrainParts:
    """What a run trains with, built from a recipe by :func:`build_parts`."""

    model: CaptionerParts  # ours, or a pretrained family's (fine-tuning)
    tokenizer: Any
    optimizer: optim.Optimizer
    schedules: dict[str, Schedule]
    step: TrainStep
    total_steps: int
    ema: WeightAverage | None = None  # the weights' moving average (``optim.ema``)


def build_parts(
    cfg: TrainConfig,
    data: TrainData,
    world: World | None = None,
    *,
    init_from: str | Path | None = None,
    resume: Path | None = None,
    total_steps: int | None = None,
) -> TrainParts:
    """The model, tokenizer, optimizer and step of a recipe, over ``data``.

    The model comes from ``resume`` (a training checkpoint: weights and optimizer state),
    ``init_from`` (a captioner folder: weights only) or is built fresh with a tokenizer
    trained on the data. ``data`` gets the tokenizer and the model's preprocessing; the model's
    config gets what the training images look like (``image_look``, unless resuming). The
    schedules run over ``total_steps`` (default: the recipe's epochs, capped by
    ``max_steps``).
    """
    world = world or World()
    start = resume or init_from
    if start:
        model, tokenizer = load_captioner(start)
        data.set_tokenizer(tokenizer)
    else:
        tokenizer = data.tokenizer or data.make_tokenizer()
        model = build_captioner(cfg, tokenizer.vocab_size)
    agree(tokenizer.vocab_size, world, "the tokenizer's vocabulary size")
    positions = model.decoder.max_positions
    if cfg.data.max_length - 1 > positions:
        raise UserError(
            f"data.max_length {cfg.data.max_length} needs {cfg.data.max_length - 1} decoder "
            f"positions but the model has {positions}; lower data.max_length"
        )
    data.set_preprocess(model.config.vision.preprocess)
    if not resume:  # a resumed run keeps what its first start measured
        model.config.image_look = data.image_look()
    set_trainable(model, cfg.model)
    model.train()
    ema = _weight_average(model, cfg.optim.ema, resume)
    if total_steps is None:
        total_steps = cfg.epochs * data.steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
    optimizer, schedules = build_optimizer(cfg.optim, total_steps, model.encoder_prefix)
    optimizer.init(model.trainable_parameters())
    if resume:
        # Before the step is built: the compiled step captures the optimizer's state.
        restore_optimizer(optimizer, resume, model.trainable_parameters())
    step = TrainStep.for_recipe(model, optimizer, cfg, world)
    return TrainParts(model, tokenizer, optimizer, schedules, step, total_steps, ema)


def _weight_average(
    model: nn.Module, decay: float | None, resume: Path | None
) -> WeightAverage | None:
    """The recipe's moving average of the weights (None without ``optim.ema``).

    A checkpoint written with one holds the average as its model weights and the training
    weights beside them: the average starts from the first, training continues from the second.
    """
    average = None
    if decay is not None:
        try:
            average = WeightAverage(model, decay)
        except ValueError as err:
            raise UserError(f"optim.ema: {err}") from None
    training = resume / TRAINING_WEIGHTS_FILE if resume else None
    if training is not None and training.is_file():
        model.load_weights(list(mx.load(str(training)).items()), strict=False)
    return average


def check_recipe(cfg: TrainConfig, world: World) -> None:
    """Refuse a recipe whose parts cannot fit together, before anything is built."""
    if cfg.model.encoder_mode not in ("frozen", "finetune"):
        raise UserError(
            f"model.encoder_mode must be 'frozen' or 'finetune', got {cfg.model.encoder_mode!r}"
        )
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise UserError(f"max_minutes must be positive, got {cfg.max_minutes}")
    k = cfg.data.captions_per_image
    if k < 1 or cfg.batch_size % k:
        raise UserError(
            f"batch_size {cfg.batch_size} must be a multiple of data.captions_per_image {k}"
        )
    images = cfg.batch_size // k
    if images % world.size:
        raise UserError(
            f"{images} images per step do not split over {world.size} processes; "
            "make batch_size / captions_per_image a multiple of the process count"
        )
    streams = cfg.cpu_streams
    if streams == "auto":
        return
    if isinstance(streams, bool) or not isinstance(streams, int):
        raise UserError(f"cpu_streams must be 'auto' or a whole number, got {streams!r}")
    if streams < 1 or (images // world.size) % streams:
        raise UserError(
            f"cpu_streams must be >= 1 and divide the {images // world.size} images each "
            f"process takes per step, got {streams}"
        )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    """The same seed for MLX, NumPy and Python's ``random``."""
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """Runs a :class:`~mlx_caption.train.config.TrainConfig` recipe in ``out_dir`` with its
    built parts (see :func:`build_parts`; :meth:`from_recipe` builds them).

    ``Trainer.from_recipe(cfg, out).fit()`` trains from scratch;
    ``Trainer.from_recipe(cfg, out, resume=ckpt).fit()`` continues a checkpoint exactly
    (weights, optimizer moments, lr schedule position, RNG, epoch and batch offset),
    appending to ``metrics.jsonl``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        parts: TrainParts,
        data: TrainData,
        *,
        state: TrainState | None = None,
        world: World | None = None,
        resumed_from: Path | None = None,
        progress: bool = True,
        wandb: WandbLogger | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.world = world or World()
        self.data = data
        self.model, self.tokenizer = parts.model, parts.tokenizer
        self.optimizer, self.schedules = parts.optimizer, parts.schedules
        self.step_fn = parts.step
        self.ema = parts.ema
        self.state = state or TrainState(seed=cfg.seed)
        self.state.config = cfg.to_dict()
        self.state.total_steps = self.state.total_steps or parts.total_steps
        self.steps_per_epoch = data.steps_per_epoch
        self.frozen = cfg.model.encoder_mode == "frozen"
        self.resumed_from = resumed_from
        self.last_checkpoint: Path | None = resumed_from
        self.progress = progress and self.world.is_main
        self._print = log or _stderr
        self.log = MetricsLog(self.out / METRICS_FILE)
        self.wandb = wandb
        self._stop_signal: str | None = None
        self._deadline: float | None = None  # perf_counter time when max_minutes runs out
        self._bar = None

    @classmethod
    def from_recipe(
        cls,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        resume: str | Path | None = None,
        world: World | None = None,
        progress: bool = True,
        wandb: bool = False,
        wandb_project: str = "mlx-caption",
        log: Callable[[str], None] | None = None,
    ) -> Trainer:
        """Build everything a recipe needs (data, model, optimizer, step) and the trainer.

        ``resume`` (a checkpoint or run folder) continues that run; its schedule keeps the
        length it was first given.
        """
        world = world or init_world()
        check_recipe(cfg, world)
        out = Path(out_dir)
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            scratch = cfg.model.encoder == "scratch" and not cfg.model.init_from
            if scratch and cfg.model.encoder_mode == "frozen":
                # Legitimate as a random-features baseline (and for tests), rarely wanted.
                (log or _stderr)(
                    "warning: a frozen scratch encoder is random: its features carry little"
                )
        barrier(world)
        resume_ckpt = resolve_checkpoint(resume) if resume else None
        state = read_state(resume_ckpt) if resume_ckpt else TrainState(seed=cfg.seed)
        seed_everything(cfg.seed)
        data = TrainData.build(cfg, out, world)
        parts = build_parts(
            cfg,
            data,
            world,
            init_from=cfg.model.init_from,
            resume=resume_ckpt,
            # The schedule's length is fixed by the first start.
            total_steps=state.total_steps or None,
        )
        if resume_ckpt:
            set_rng_state(state.rng)
        if cfg.model.encoder_mode == "frozen":
            data.prepare_features(parts.model, progress=progress and world.is_main)
        logger = None
        if wandb and world.is_main:
            logger = WandbLogger(wandb_project, cfg.to_dict(), out, state.extra.get("wandb_id"))
            state.extra["wandb_id"] = logger.id
        reporting = {"progress": progress, "wandb": logger, "log": log}
        return cls(
            cfg, out, parts, data, state=state, world=world, resumed_from=resume_ckpt, **reporting
        )

    def lr(self, group: str = "decay") -> float:
        """The lr the next step will use for a parameter group."""
        return float(self.schedules[group](mx.array(self.state.step)).item())

    def trainable_count(self) -> int:
        return sum(p.size for _, p in tree_flatten(self.model.trainable_parameters()))

    # ------------------------------------------------------------------ the loop

    def fit(self, stop_at_step: int | None = None) -> TrainResult:
        """Train until the recipe's end (or ``stop_at_step``, ``max_minutes``, Ctrl-C/SIGTERM,
        or divergence).

        ``stop_at_step`` ends this call after that many total steps with a checkpoint, without
        changing the schedule (a later resume continues as if never stopped); so does the
        recipe's ``max_minutes`` once that much time has passed since this call began.
        """
        st = self.state
        started = time.perf_counter()
        minutes = self.cfg.max_minutes
        self._deadline = started + 60 * minutes if minutes is not None else None
        if self.world.is_main:
            if self.resumed_from:
                dropped = self.log.truncate_after(st.step)
                self._print(
                    f"resuming {self.resumed_from} at step {st.step} (epoch {st.epoch}, "
                    f"batch {st.batch_offset}); lr {self.lr():.3g}"
                    + (f"; dropped {dropped} log lines past it" if dropped else "")
                )
            self._print(self._summary())
        previous = self._install_signals()
        self._bar = self._progress_bar()
        try:
            while st.step < st.total_steps:
                outcome = self._run_epoch(stop_at_step)
                if outcome is not None:
                    return self._result(*outcome, started)
            return self._result("finished", f"trained {st.step} steps", started)
        except Diverged as err:
            last = self.last_checkpoint.name if self.last_checkpoint else "none yet"
            message = (
                f"training diverged: {err}. Stopped without saving; the last good checkpoint "
                f"is {last}. Try a lower optim.lr, a smaller optim.grad_clip or more warmup."
            )
            if self.world.is_main:
                self._print(f"error: {message}")
                self.log.append({"kind": "error", "step": st.step, "message": message})
            return self._result("diverged", message, started)
        finally:
            if self._bar is not None:
                self._bar.close()
            self._restore_signals(previous)
            if self.wandb is not None:
                self.wandb.finish()

    def _run_epoch(self, stop_at_step: int | None) -> tuple[str, str] | None:
        """Steps to the end of the current epoch; (status, message) if the run must end."""
        cfg, st = self.cfg, self.state
        # Steps since the last log line; kept in state.json so a resumed run logs the same means.
        window = st.extra.setdefault("log_window", [])
        timed, t_window = 0, time.perf_counter()
        for images, tokens in self.data.train_batches(st.epoch, st.batch_offset):
            out = self.step_fn(images, tokens)
            if not (math.isfinite(out.loss) and math.isfinite(out.grad_norm)):
                raise Diverged(
                    f"loss {out.loss}, gradient norm {out.grad_norm} at step {st.step + 1} "
                    f"(epoch {st.epoch}, batch {st.batch_offset})"
                )
            st.step += 1
            st.batch_offset += 1
            if self.ema is not None:
                self.ema.update(self.model, st.step - 1)
            window.append({"loss": out.loss, "accuracy": out.accuracy, "grad_norm": out.grad_norm})
            timed += 1
            if self._bar is not None:
                self._bar.update(1)
            done = st.step >= st.total_steps
            if st.step % cfg.log_every == 0 or done:
                self._log_train(window, timed, time.perf_counter() - t_window)
                window.clear()
                timed, t_window = 0, time.perf_counter()
            end_of_epoch = st.batch_offset >= self.steps_per_epoch
            if end_of_epoch:
                st.epoch += 1
                st.batch_offset = 0
            every = cfg.eval.every_steps
            if (every and st.step % every == 0) or (not every and end_of_epoch) or done:
                self._evaluate()
                self._save()
            elif st.step % cfg.checkpoint.every_steps == 0 or end_of_epoch:
                self._save()
            signal_name, out_of_time = self._should_stop()
            if signal_name or (stop_at_step is not None and st.step >= stop_at_step):
                self._save()
                if signal_name:
                    return "interrupted", f"stopped by {signal_name} at step {st.step}"
                return "stopped", f"stopped at step {st.step}"
            if out_of_time and not done:
                self._save()
                return "time_limit", (
                    f"max_minutes ({cfg.max_minutes:.3g}) reached at step {st.step} of "
                    f"{st.total_steps}; resume to continue the schedule"
                )
            if done or end_of_epoch:
                return None
        # The stream ran dry before steps_per_epoch batches (it should not): next epoch.
        st.epoch += 1
        st.batch_offset = 0
        return None

    # ------------------------------------------------------------------ checkpoints, logs

    def _save(self) -> Path | None:
        """Checkpoint the current step (rank 0; once per step)."""
        st = self.state
        if self.last_checkpoint is not None and self.last_checkpoint.name == f"ckpt-{st.step}":
            return self.last_checkpoint
        st.rng = rng_state()
        path = None
        if self.world.is_main:
            try:
                path = save_checkpoint(
                    self.out,
                    self.model,
                    self.tokenizer,
                    self.optimizer,
                    st,
                    keep_last=self.cfg.checkpoint.keep_last,
                    write_model=self._write_model,
                )
            except NonFiniteWeights as err:
                raise Diverged(str(err)) from err
            if (
                st.best is not None
                and st.best.get("step") == st.step
                and self.cfg.checkpoint.keep_best
            ):
                mark_best(self.out, path, st.best["metric"], st.best["value"])
        self.last_checkpoint = path or self.out / f"ckpt-{st.step}"
        return self.last_checkpoint

    def _write_model(self, model: nn.Module, tokenizer: Any, folder: Path) -> None:
        """A checkpoint's model files: the averaged weights with ``optim.ema`` (what captioning
        loads), plus the training weights a resume continues from."""
        with self._averaged():
            write_model_files(model, tokenizer, folder)
        if self.ema is not None:
            save_training_weights(model, folder)

    def _averaged(self) -> contextlib.AbstractContextManager:
        """The moving average in the model inside the block (nothing without ``optim.ema``)."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def _log_train(self, window: list[dict], timed: int, seconds: float) -> None:
        """One "train" line: means over ``window``; throughput over the ``timed`` steps."""
        if not window or not self.world.is_main:
            return
        st = self.state
        images = timed * self.cfg.batch_size / self.cfg.data.captions_per_image
        record = {
            "kind": "train",
            "step": st.step,
            "epoch": st.epoch,
            "loss": sum(o["loss"] for o in window) / len(window),
            "accuracy": sum(o["accuracy"] for o in window) / len(window),
            "grad_norm": sum(o["grad_norm"] for o in window) / len(window),
            "lr": self.lr_used(st.step - 1),
            "images_per_s": images / max(seconds, 1e-9),
            "steps_per_s": timed / max(seconds, 1e-9),
            "time": time.time(),
        }
        if self.frozen is False:
            record["encoder_lr"] = self.lr_used(st.step - 1, "encoder_decay")
        self.log.append(record)
        if self.wandb is not None:
            self.wandb.log(record)
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                lr=f"{record['lr']:.2e}",
                img_s=f"{record['images_per_s']:.1f}",
            )

    def lr_used(self, step: int, group: str = "decay") -> float:
        """The lr of a parameter group at optimizer step ``step`` (0 = the first update)."""
        return float(self.schedules[group](mx.array(max(0, step))).item())

    def _summary(self) -> str:
        cfg = self.cfg
        sizes = group_sizes(self.model, cfg.optim.decay_all)
        start = f"from {cfg.model.init_from}" if cfg.model.init_from else cfg.model.encoder
        total = sum(p.size for _, p in tree_flatten(self.model.parameters()))
        return (
            f"training {total / 1e6:.2f}M parameters ({sum(sizes.values()) / 1e6:.2f}M trainable, "
            f"{start}, encoder {cfg.model.encoder_mode}); "
            f"{self.data.describe_train_images()}, {self.steps_per_epoch} steps/epoch, "
            f"{self.state.total_steps} steps, batch {cfg.batch_size} rows"
            + (f" on {self.world.size} processes" if self.world.distributed else "")
            + (f", {self.step_fn.cpu_streams} CPU streams" if self.step_fn.cpu_streams > 1 else "")
            + (f", at most {cfg.max_minutes:.3g} min" if cfg.max_minutes is not None else "")
            + f"; out {self.out}"
        )

    def _progress_bar(self):
        if not self.progress:
            return None
        return tqdm(
            total=self.state.total_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _result(self, status: str, message: str, started: float) -> TrainResult:
        st = self.state
        return TrainResult(
            status=status,
            step=st.step,
            epoch=st.epoch,
            out_dir=str(self.out),
            checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
            best=st.best,
            last_eval=st.history[-1] if st.history else None,
            message=message,
            train_seconds=time.perf_counter() - started,
        )

    def _evaluate(self) -> dict:
        """Evaluate on the fixed validation subset (rank 0), log it, track the best score."""
        cfg, st = self.cfg, self.state
        record: dict = {"kind": "eval", "step": st.step, "epoch": st.epoch}
        if self.world.is_main and self.data.num_val_images:
            t0 = time.perf_counter()
            with self._averaged():
                scores = evaluate_captioner(
                    self.model,
                    self.tokenizer,
                    self.data.val_batches(),
                    from_features=self.frozen,
                    max_length=cfg.data.max_length,
                    label_smoothing=cfg.label_smoothing,
                    generate_captions=cfg.eval.generate,
                    generation_length=cfg.eval.max_length,
                    metrics_tokenizer=cfg.eval.metrics_tokenizer,
                    metrics=cfg.eval.metrics,
                    scenes=self.data.val_scenes,
                )
            record.update(scores)
            record["eval_seconds"] = time.perf_counter() - t0
            metric = cfg.eval.best_metric
            value = record.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                lower_is_better = metric in ("val_loss", "val_nll")
                best = st.best["value"] if st.best else None
                if best is None or (value < best if lower_is_better else value > best):
                    st.best = {"metric": metric, "value": value, "step": st.step}
            st.history.append({k: v for k, v in record.items() if k != "examples"})
            self.log.append(record)
            if self.wandb is not None:
                self.wandb.log(record)
            self._report_eval(record)
            plot_curves(self.log.read(), self.out / CURVES_FILE, title=self.out.name)
        barrier(self.world)  # the other ranks wait here instead of inside the next all-reduce
        return record

    def _report_eval(self, record: dict) -> None:
        keys = ("val_loss", "val_accuracy", "CIDEr", "Bleu_4", "pair_f1", "exact")
        parts = [f"{k} {record[k]:.4g}" for k in keys if isinstance(record.get(k), (int, float))]
        line = f"eval step {record['step']}: " + ", ".join(parts)
        if record.get("examples"):
            line += f"\n  e.g. {record['examples'][0]['caption']!r}"
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            self._print(line)

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> dict:
        previous = {}

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self._stop_signal is not None:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
            self._stop_signal = name
            if self.world.is_main:
                self._print(f"\n{name}: saving a checkpoint after this step (again to abort)")

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        return previous

    def _restore_signals(self, previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _should_stop(self) -> tuple[str | None, bool]:
        """(the signal that asked to stop, whether ``max_minutes`` has passed), agreed over
        ranks: any rank stopping stops all."""
        out_of_time = self._deadline is not None and time.perf_counter() >= self._deadline
        if not self.world.distributed:
            return self._stop_signal, out_of_time
        flags = mx.distributed.all_sum(
            mx.array([1.0 if self._stop_signal else 0.0, 1.0 if out_of_time else 0.0]),
            group=self.world.group,
        )
        signalled, timed_out = (v > 0 for v in flags.tolist())
        signal_name = self._stop_signal or ("a signal on another rank" if signalled else None)
        return signal_name, timed_out


# ----------------------------------------------------------------------------- model


def build_captioner(cfg: TrainConfig, vocab_size: int) -> Captioner:
    """A fresh captioner for a recipe: encoder from scratch, the zoo or a converted folder."""
    m = cfg.model
    decoder = _decoder_config(m.decoder)
    fields = {"vocab_size": vocab_size, "max_length": cfg.data.max_length, **m.decoder_overrides}
    decoder = DecoderConfig.from_dict({**decoder.to_dict(), **fields})
    if m.encoder == "scratch":
        if not m.vision:
            raise UserError("model.encoder: scratch needs a model.vision section (encoder config)")
        encoder, vision = None, encoder_config_from_dict(m.vision)
        if m.image_size is not None:
            vision = at_image_size(vision, m.image_size)
    else:
        encoder = load_encoder(m.encoder, image_size=m.image_size)
        vision = encoder.config
    config = CaptionerConfig(
        vision=vision, decoder=decoder, encoder_name=None if encoder is None else m.encoder,
        projector=m.projector,
    )  # fmt: skip
    try:
        model = Captioner(config)
    except ValueError as err:  # the model's own checks (stem, patch size, heads, projector)
        raise UserError(f"model config: {err}") from None
    if encoder is not None:
        model.load_encoder_weights(encoder)
    elif m.position_init == "sincos":
        if not hasattr(model.encoder, "init_sincos_positions"):
            raise UserError(
                "model.position_init: 'sincos' is for CLIP scratch encoders; use 'random'"
            )
        model.encoder.init_sincos_positions()
    elif m.position_init != "random":
        raise UserError(
            f"model.position_init must be 'sincos' or 'random', not {m.position_init!r}"
        )
    mx.eval(model.parameters())
    return model


def _decoder_config(spec: str | dict) -> DecoderConfig:
    if isinstance(spec, dict):
        return DecoderConfig.from_dict(spec)
    if spec not in DECODER_PRESETS:
        raise UserError(
            f"unknown decoder preset {spec!r}; choose from {', '.join(DECODER_PRESETS)} "
            "or give DecoderConfig fields"
        )
    return DECODER_PRESETS[spec]


def set_trainable(model: nn.Module, m: TrainModelConfig) -> None:
    """Freeze the encoder (frozen) or all but its last N blocks (finetune); set checkpointing."""
    model.unfreeze()
    model.freeze_encoder()
    if m.encoder_mode == "finetune":
        try:
            model.unfreeze_encoder(m.finetune_last_n)
        except ValueError as err:
            raise UserError(f"model.finetune_last_n: {err}") from None
    model.encoder.grad_checkpoint = bool(m.grad_checkpoint and m.encoder_mode == "finetune")
