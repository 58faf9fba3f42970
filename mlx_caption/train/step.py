"""The training step: caption loss, teacher forcing and the compiled optimizer update.

``TrainStep`` is ``nn.value_and_grad`` over the model's trainable parameters, gradient
averaging across ranks, global-norm clipping and an AdamW update, compiled once with
``mx.compile(inputs=state, outputs=state)`` where ``state = [model.state, optimizer.state,
mx.random.state]``. Batches must have fixed shapes (captions padded to ``max_length``, the
last ragged batch dropped) so it never recompiles.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from mlx_caption import backend
from mlx_caption.tokens import NO_TOKEN
from mlx_caption.train.config import TrainConfig
from mlx_caption.train.distributed import World
from mlx_caption.train.loss import cross_entropy

# ----------------------------------------------------------------------------- loss


def caption_loss(
    logits: mx.array,
    targets: mx.array,
    label_smoothing: float = 0.0,
    streams: Sequence[mx.Stream] = (),
) -> tuple[mx.array, mx.array, mx.array]:
    """Summed cross-entropy over the real targets (not :data:`~mlx_caption.tokens.NO_TOKEN`
    padding), the number of those, and how many are right.

    ``logits`` (B, L, V), ``targets`` (B, L) int. Returns sums (not means) so that ranks and
    batches can be combined exactly: mean loss = sum / count, token accuracy = correct / count.
    The loss is :func:`~mlx_caption.train.loss.cross_entropy` (its rows split over
    ``streams`` when given).
    """
    real = targets != NO_TOKEN
    mask = real.astype(mx.float32)
    targets = mx.where(real, targets, 0)  # any id: masked out below
    ce, correct = cross_entropy(logits, targets, label_smoothing, streams=streams)
    return (ce * mask).sum(), mask.sum(), (correct * mask).sum()


def shifted(tokens: mx.array) -> tuple[mx.array, mx.array]:
    """Teacher forcing's inputs ``tokens[:, :-1]`` and targets ``tokens[:, 1:]``.

    Padding (``NO_TOKEN``) must still be some id in the inputs: a padded position comes after
    every real one, so under causal attention it changes nothing the loss counts.
    """
    inputs = tokens[:, :-1]
    return mx.where(inputs == NO_TOKEN, 0, inputs), tokens[:, 1:]


def image_tokens(model: nn.Module, images: mx.array, from_features: bool) -> mx.array:
    """Projected image tokens (B, T, d) from pixels, or from cached encoder grids."""
    return model.project(images) if from_features else model.encode(images)


def teacher_forced(
    model: nn.Module,
    images: mx.array,
    tokens: mx.array,
    *,
    from_features: bool,
    captions_per_image: int = 1,
) -> tuple[mx.array, mx.array]:
    """Logits for ``tokens[:, :-1]`` and their targets ``tokens[:, 1:]``.

    ``images`` holds one entry per image; with ``captions_per_image = k`` the caption rows are
    grouped by image (rows ``i*k .. i*k+k-1`` belong to image ``i``) and the image tokens are
    repeated to match, so the encoder runs once per image, not once per caption.
    """
    grid = image_tokens(model, images, from_features)
    if captions_per_image > 1:
        grid = mx.repeat(grid, captions_per_image, axis=0)
    inputs, targets = shifted(tokens)
    return model(grid, inputs), targets


# ----------------------------------------------------------------------------- step


@dataclass
class StepOutput:
    """What one optimizer step reports (global values, the same on every rank)."""

    loss: float  # label-smoothed cross-entropy per target token
    accuracy: float  # next-token accuracy over non-pad targets
    grad_norm: float  # before clipping
    tokens: int


class TrainStep:
    """One optimizer update, compiled or not (the two give the same numbers).

    ``step(images, tokens)`` takes this rank's rows. The loss is normalized by the *global*
    token count, so averaging gradients over ranks equals one process on the combined batch.

    With ``cpu_streams = n > 1`` (CPU only) the rows are split into ``n`` chunks whose
    gradients are computed concurrently on ``n`` CPU streams, each with a ``1/n`` share of
    the BLAS threads, then summed for one update: the same update (up to float rounding).
    MLX runs each element-wise op on one core, so one stream leaves cores idle through the
    loss, the backward pass's element-wise work and AdamW; split, each has a core (the
    README's training section has the figures). Recipes pick the count with
    :func:`resolve_cpu_streams`.

    On a multi-core CPU the update itself (summing the chunks' gradients, the gradient norm
    and clipping, the optimizer's per-array update) is spread over CPU streams too, whatever
    ``cpu_streams`` is: each trainable array is updated on one stream, the arrays dealt out
    so the streams hold near-equal numbers of weights (:func:`balanced_streams`). The
    update is element-wise work over every trainable weight, several passes each; fine-tuning
    a ViT-B end to end spent a seventh of its step there on one core. Same numbers: each
    array's update is the same ops, only their stream differs.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        *,
        label_smoothing: float = 0.0,
        grad_clip: float | None = None,
        from_features: bool = False,
        captions_per_image: int = 1,
        world: World | None = None,
        compile: bool = True,
        cpu_streams: int = 1,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.world = world or World()
        self.captions_per_image = captions_per_image
        world = self.world
        # Optimizer state must exist before compiling: the compiled function captures it.
        optimizer.init(model.trainable_parameters())
        split = cpu_streams > 1 and not backend.on_gpu()
        # A step on one stream still spreads the loss over the vocabulary (its largest
        # element-wise work) over the CPU's cores; a split step already has a core per chunk.
        loss_streams = (
            () if split or backend.on_gpu() else backend.cpu_streams(backend.default_parts())
        )
        trainable = tree_flatten(model.trainable_parameters())
        update_streams = backend.cpu_streams(1 if backend.on_gpu() else backend.default_parts())
        self._leaf_streams = dict(
            zip(
                [name for name, _ in trainable],
                balanced_streams([p.size for _, p in trainable], update_streams),
                strict=True,
            )
        )

        def loss_fn(model, images, tokens, n_global):
            logits, targets = teacher_forced(
                model,
                images,
                tokens,
                from_features=from_features,
                captions_per_image=captions_per_image,
            )
            total, count, correct = caption_loss(logits, targets, label_smoothing, loss_streams)
            # x size: average_gradients divides by size; the result is the global mean's grad.
            return total / n_global * world.size, (total, correct)

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def global_count(tokens: mx.array) -> mx.array:
            count = (tokens[:, 1:] != NO_TOKEN).sum().astype(mx.float32)
            return mx.maximum(self._all_sum(count), 1.0)

        def chunk_grads(images: mx.array, tokens: mx.array, n_global: mx.array):
            (_, (total, correct)), grads = value_and_grad(model, images, tokens, n_global)
            return grads, total, correct

        def apply(grads, total, correct, n_global):
            if world.distributed:
                grads = nn.average_gradients(grads, group=world.group)
                total, correct = self._all_sum(total), self._all_sum(correct)
            squares = self._per_leaf(lambda g: mx.square(g.astype(mx.float32)).sum(), grads)
            squares = [sq for _, sq in tree_flatten(squares)]
            norm = mx.sqrt(_add(squares or [mx.array(0.0)]))
            if grad_clip is not None and grad_clip > 0:
                # optim.clip_grad_norm's rule, each array scaled on its own stream.
                factor = mx.minimum(grad_clip / (norm + 1e-6), 1.0)
                grads = self._per_leaf(lambda g: (g * factor).astype(g.dtype), grads)
            self._update(grads)
            return total / n_global, correct / n_global, norm, n_global, squares

        def step(images: mx.array, tokens: mx.array):
            n_global = global_count(tokens)
            *out, squares = apply(*chunk_grads(images, tokens, n_global), n_global)
            # The square sums only as outputs where _queue_updates reads them: each output
            # of the compiled step costs (the demo's split step: 3-4% with them).
            return (*out, squares if self._free_gradients_early else [])

        def summed_apply(chunks, n_global):
            grads, totals, corrects = zip(*chunks, strict=True)
            grads = self._per_leaf(lambda *g: _add(g), *grads)
            return apply(grads, _add(totals), _add(corrects), n_global)[:4]

        # Checkpointing asks to save memory; without clipping (which needs every gradient
        # before the first update) each gradient can then be freed once applied.
        self._free_gradients_early = not (grad_clip is not None and grad_clip > 0) and bool(
            getattr(getattr(model, "encoder", None), "grad_checkpoint", False)
        )
        self.state = [model.state, optimizer.state, mx.random.state]
        maybe_compile = (lambda f, **kw: mx.compile(f, **kw)) if compile else (lambda f, **kw: f)
        self.cpu_streams = cpu_streams if split else 1
        if self.cpu_streams == 1:
            self._step: Callable = maybe_compile(step, inputs=self.state, outputs=self.state)
            return
        # Split path: the chunks' gradients (one compiled graph per stream: MLX keys its
        # compile cache by the default stream), then the sum and the update.
        self._streams = [mx.new_stream(mx.cpu) for _ in range(self.cpu_streams)]
        cores = os.cpu_count() or self.cpu_streams
        self._blas_threads = max(1, cores // self.cpu_streams)
        # nn.value_and_grad leaves its traced parameters in the model: model.state is an
        # output of the chunks' graph too (unchanged), or the model would hold tracers.
        reads = [model.state, mx.random.state]
        self._count = maybe_compile(global_count)
        self._chunk_grads = maybe_compile(chunk_grads, inputs=reads, outputs=reads)
        self._apply = maybe_compile(summed_apply, inputs=self.state, outputs=self.state)

    @classmethod
    def for_recipe(
        cls,
        model: nn.Module,
        optimizer: optim.Optimizer,
        cfg: TrainConfig,
        world: World | None = None,
    ) -> TrainStep:
        """The step a training recipe asks for (loss, clipping, encoder mode, compilation)."""
        world_size = world.size if world is not None else 1
        return cls(
            model,
            optimizer,
            label_smoothing=cfg.label_smoothing,
            grad_clip=cfg.optim.grad_clip,
            from_features=cfg.model.encoder_mode == "frozen",
            captions_per_image=cfg.data.captions_per_image,
            world=world,
            compile=cfg.compile,
            cpu_streams=resolve_cpu_streams(
                cfg.cpu_streams,
                cfg.batch_size // cfg.data.captions_per_image // world_size,
                grad_checkpoint=bool(getattr(model.encoder, "grad_checkpoint", False)),
            ),
        )

    def _stream_of(self, name: str) -> mx.Stream:
        default = mx.default_stream(mx.default_device())
        return self._leaf_streams.get(name, default)

    def _per_leaf(self, fn: Callable, *trees: dict) -> dict:
        """``tree_map(fn, *trees)`` with each array's ops on its update stream."""
        flat = [tree_flatten(tree) for tree in trees]
        out = []
        for i, (name, _) in enumerate(flat[0]):
            with mx.stream(self._stream_of(name)):
                out.append((name, fn(*(leaves[i][1] for leaves in flat))))
        return tree_unflatten(out)

    def _update(self, grads: dict) -> None:
        """``optimizer.update(model, grads)``, each array's update on its stream.

        An optimizer updates one array at a time through ``apply_single`` (a
        ``MultiOptimizer`` through its groups' optimizers): wrapping that on the instances
        for the call places each array's ops, whatever the optimizer is.
        """
        placed = {id(g): self._stream_of(name) for name, g in tree_flatten(grads)}
        optimizers = _leaf_optimizers(self.optimizer)
        own = [vars(optimizer).get("apply_single") for optimizer in optimizers]
        for optimizer in optimizers:
            optimizer.apply_single = _placed(optimizer.apply_single, placed)
        try:
            self.optimizer.update(self.model, grads)
        finally:
            for optimizer, before in zip(optimizers, own, strict=True):
                if before is None:
                    del optimizer.apply_single
                else:  # a wrapper someone set on the instance stays
                    optimizer.apply_single = before

    def _all_sum(self, x: mx.array) -> mx.array:
        if not self.world.distributed:
            return x
        return mx.distributed.all_sum(x, group=self.world.group)

    def _split_step(self, images: mx.array, tokens: mx.array):
        n = self.cpu_streams
        if images.shape[0] % n:
            raise ValueError(f"{images.shape[0]} images do not split over {n} CPU streams")
        size, k = images.shape[0] // n, self.captions_per_image
        n_global = self._count(tokens)
        chunks = []
        for i, stream in enumerate(self._streams):
            with mx.stream(stream):
                rows = slice(i * size * k, (i + 1) * size * k)
                chunks.append(
                    self._chunk_grads(images[i * size : (i + 1) * size], tokens[rows], n_global)
                )
        _queue_in_step(chunks)
        return self._apply(chunks, n_global)

    def _queue_updates(self, squares: list[mx.array]) -> None:
        """Queue each trainable array's update with its gradient's square sum (``squares``, in
        ``trainable_parameters()`` order), last layer first, as the backward pass yields them.

        Each gradient is then freed once its update is done, instead of every gradient
        waiting for the step's one ``eval``: fine-tuning with gradient checkpointing holds
        about one layer's gradient at a time (ViT-B/32, batch 16: 1.61 against 1.98 GB at
        peak; batch 32: 1.89 against 2.14 GB). Done only there: with clipping, which needs
        every gradient's norm before the first update, it saves nothing, and elsewhere the
        step took 4-6% longer for 3% less memory.
        """
        params = [p for _, p in tree_flatten(self.model.trainable_parameters())]
        for param, square in reversed(list(zip(params, squares, strict=True))):
            mx.async_eval(param, square)

    def __call__(self, images: mx.array, tokens: mx.array) -> StepOutput:
        if self.cpu_streams == 1:
            loss, acc, norm, count, squares = self._step(images, tokens)
            if self._free_gradients_early:
                self._queue_updates(squares)
            mx.eval(loss, acc, norm, count, self.state)
        else:
            with backend.blas_threads(self._blas_threads):
                loss, acc, norm, count = self._split_step(images, tokens)
                mx.eval(loss, acc, norm, count, self.state)
        return StepOutput(loss.item(), acc.item(), norm.item(), int(count.item()))


def resolve_cpu_streams(
    setting: int | str, images_per_process: int, grad_checkpoint: bool = False
) -> int:
    """A recipe's ``cpu_streams`` as a count.

    ``"auto"``: on a CPU one stream per core, at most two
    (:func:`~mlx_caption.backend.default_parts`), when that divides the images each process
    takes per step; otherwise one, and always one on a GPU or with gradient checkpointing
    (asked for to save memory, while a split step holds one gradient per stream until they
    are summed).
    """
    if setting != "auto":
        return int(setting)
    parts = backend.default_parts()
    if backend.on_gpu() or grad_checkpoint or parts < 2 or images_per_process % parts:
        return 1
    return parts


def _queue_in_step(chunks: list) -> None:
    """Queue the streams' chunk graphs (``(grads, total, correct)`` each) for evaluation side by
    side: the losses (the forward passes), then each parameter's gradient of every chunk, last
    layer first, as the backward passes reach them.

    Queued by the one ``eval`` of the step, MLX takes a whole chunk's backward pass before it
    starts the other chunk's, and the streams take turns (both chunks' gradients at batch 250:
    2.3 s in turn, 1.3 s side by side, 1.3 s for one alone).
    """
    mx.async_eval([chunk[1] for chunk in chunks])
    leaves = [[g for _, g in tree_flatten(chunk[0])] for chunk in chunks]
    for grads in reversed(list(zip(*leaves, strict=True))):
        mx.async_eval(list(grads))


def balanced_streams(sizes: Sequence[int], streams: Sequence[mx.Stream]) -> list[mx.Stream]:
    """A stream for each of the items of ``sizes``, so that the streams' totals are near equal:
    largest first, each to the stream holding least so far (ties to the earlier stream)."""
    load = [0] * len(streams)
    placed: list[mx.Stream] = [streams[0]] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        lightest = min(range(len(streams)), key=lambda j: load[j])
        placed[i] = streams[lightest]
        load[lightest] += sizes[i]
    return placed


def _leaf_optimizers(optimizer: optim.Optimizer) -> list[optim.Optimizer]:
    """The optimizers whose ``apply_single`` updates the arrays (a MultiOptimizer's groups)."""
    groups = getattr(optimizer, "optimizers", None)
    if groups is None:
        return [optimizer]
    return [leaf for group in groups for leaf in _leaf_optimizers(group)]


def _placed(apply_single: Callable, streams: dict[int, mx.Stream]) -> Callable:
    """``apply_single`` run on the stream ``streams`` gives the gradient (by ``id``)."""

    def placed_apply_single(gradient: mx.array, parameter: mx.array, state: dict):
        default = mx.default_stream(mx.default_device())
        with mx.stream(streams.get(id(gradient), default)):
            return apply_single(gradient, parameter, state)

    return placed_apply_single


def _add(arrays) -> mx.array:
    return functools.reduce(mx.add, arrays)
