"""Timing helpers: warm-up, then the median of repeats, with competing variants interleaved.

On a shared machine the load drifts during a run; timing A, B, A, B, ... instead of
A, A, ..., B, B, ... exposes both variants to the same drift, so their *ratio* stays
meaningful even when absolute numbers move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mlx.core as mx


@dataclass(frozen=True)
class TimingOptions:
    """How every section times its figures: warm-up calls, timed repeats (the median is
    kept) and the seed of its random inputs and weights.

    ``min_seconds`` adds rounds until the timed rounds have lasted that long in all: a
    median of five 0.1-s calls is taken within half a second, where one passing disturbance
    on a shared machine moves it, so short calls are timed more often than long ones.
    """

    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    min_seconds: float = 0.0


DEFAULT_TIMING = TimingOptions()
TRAIN_TIMING = TimingOptions(repeats=3)  # training steps cost seconds each


@dataclass
class Timing:
    """Seconds per call: the median and every repeat."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    def rate(self, items: float) -> float:
        """Items per second at the median time."""
        return items / self.median if self.times else float("nan")

    def to_dict(self) -> dict:
        return {"median_s": self.median, "best_s": self.best, "repeats": len(self.times)}


def sync(result: object) -> None:
    """Force evaluation of whatever ``result`` holds (MLX is lazy; torch and numpy are not)."""
    if isinstance(result, mx.array):
        mx.eval(result)
    elif isinstance(result, (list, tuple, dict)):
        arrays = [v for v in (result.values() if isinstance(result, dict) else result)]
        arrays = [a for a in arrays if isinstance(a, mx.array)]
        if arrays:
            mx.eval(*arrays)


def time_call(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn`` including evaluation of its (MLX) result."""
    start = time.perf_counter()
    sync(fn())
    return time.perf_counter() - start


def measure(fn: Callable[[], object], warmup: int = 1, repeats: int = 5) -> Timing:
    """Warm up ``warmup`` calls, then time ``repeats`` calls."""
    for _ in range(warmup):
        time_call(fn)
    return Timing([time_call(fn) for _ in range(repeats)])


MAX_ROUNDS = 100  # the most rounds ``min_seconds`` may add up to


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    warmup: int = 1,
    repeats: int = 5,
    min_seconds: float = 0.0,
) -> dict[str, Timing]:
    """Time several variants round-robin: every variant warms up, then one call of each per
    round, for ``repeats`` rounds and, past that, until the rounds have taken ``min_seconds``
    in all (at most :data:`MAX_ROUNDS` rounds)."""
    for fn in fns.values():
        for _ in range(warmup):
            time_call(fn)
    out = {name: Timing() for name in fns}
    rounds, spent = 0, 0.0
    while rounds < repeats or (spent < min_seconds and rounds < MAX_ROUNDS):
        for name, fn in fns.items():
            out[name].times.append(time_call(fn))
            spent += out[name].times[-1]
        rounds += 1
    return out


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero or missing."""
    try:
        return a / b if b else float("nan")
    except TypeError:
        return float("nan")
