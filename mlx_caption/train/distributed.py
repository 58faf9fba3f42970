"""Data parallelism with ``mx.distributed`` (processes started by ``mlx.launch``).

Every rank builds the same global batch order (same seed, same epoch permutation) and reads
only its slice of each global batch; gradients are averaged with ``nn.average_gradients``
inside the step. Only rank 0 writes checkpoints, logs and plots.

Run alone (no ``mlx.launch``) the group has size 1 and everything here is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from mlx_caption.errors import UserError


@dataclass
class World:
    """The process group: ``rank`` of ``size``; ``group`` is None when running alone."""

    rank: int = 0
    size: int = 1
    group: mx.distributed.Group | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world() -> World:
    """Join the group ``mlx.launch`` set up (size 1 when started without it)."""
    if not mx.distributed.is_available():
        return World()
    group = mx.distributed.init()
    if group.size() == 1:
        return World()
    return World(rank=group.rank(), size=group.size(), group=group)


def shard_rows(global_batch: int, world: World) -> slice:
    """The rows of a global batch this rank trains on (contiguous, equal sizes)."""
    if global_batch % world.size:
        raise UserError(
            f"batch_size {global_batch} is not divisible by the {world.size} processes; "
            "pick a multiple"
        )
    per_rank = global_batch // world.size
    return slice(world.rank * per_rank, (world.rank + 1) * per_rank)


def all_sum(x: mx.array, world: World) -> mx.array:
    """Sum over ranks (identity alone)."""
    if not world.distributed:
        return x
    return mx.distributed.all_sum(x, group=world.group)


def barrier(world: World) -> None:
    """Wait until every rank gets here (a tiny all-reduce)."""
    if world.distributed:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=world.group))


def agree(value: float, world: World, what: str) -> None:
    """Fail loudly when ranks disagree on a number that must be equal (e.g. vocabulary size)."""
    if not world.distributed:
        return
    total = mx.distributed.all_sum(mx.array(float(value)), group=world.group).item()
    if abs(total - value * world.size) > 1e-6 * max(1.0, abs(value) * world.size):
        raise RuntimeError(f"ranks disagree on {what}: rank {world.rank} has {value}")
