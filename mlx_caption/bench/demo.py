"""The demo at a fixed number of steps: what the captions get right, over several seeds.

``mlx-caption demo`` trains for a time budget, so its scores move with the machine's load.
Here the demo's recipe trains a fixed number of steps (what a 10-minute demo reaches at a slow
moment) once per training seed, on the same generated data, and each run's captions of the
test images are scored against the generator's ground truth (pair recall and precision: a
colour-shape pair named in the caption and present in the image). The goal reads the lowest
of the two over all seeds.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any


def bench_demo(
    steps: int = 1400,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    *,
    images: int | None = None,
    test_images: int | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the demo's recipe ``steps`` steps for each seed; pair recall / precision, the
    training rate, and their spread. ``images`` (generated) and ``test_images`` (scored)
    shrink the run for tests; ``out_dir`` keeps the runs (a temporary folder otherwise)."""
    from mlx_caption.demo import run_demo

    overrides: dict[str, Any] = {}
    if images is not None:
        overrides["data.synthetic.images"] = images
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        for i, seed in enumerate(seeds):
            run_dir = root / f"seed{seed}"
            if i:  # the same generated images for every seed: written once
                (run_dir / "train").mkdir(parents=True, exist_ok=True)
                shared = (root / f"seed{seeds[0]}" / "train" / "data").resolve()
                if not (run_dir / "train" / "data").exists():
                    (run_dir / "train" / "data").symlink_to(shared, target_is_directory=True)
            summary = run_demo(
                run_dir,
                progress=False,
                log=lambda msg: None,
                steps=steps,
                test_images=test_images,
                overrides={**overrides, "seed": seed},
            )
            objects, training = summary["objects"], summary["training"]
            runs.append(
                {
                    "seed": seed,
                    "pair_recall": objects["pair_recall"],
                    "pair_precision": objects["pair_precision"],
                    "exact": objects["exact"],
                    "CIDEr": summary["test"].get("CIDEr"),
                    "steps": training["steps"],
                    "steps_per_s": training["steps_per_s"],
                }
            )

    def spread(key: str) -> dict[str, float]:
        values = [r[key] for r in runs]
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "steps": steps,
        "seeds": list(seeds),
        "runs": runs,
        "pair_recall": spread("pair_recall"),
        "pair_precision": spread("pair_precision"),
        "steps_per_s": spread("steps_per_s"),
        "min_pair_score": min(min(r["pair_recall"], r["pair_precision"]) for r in runs),
    }
