"""Images per second: the mlx-data training stream against a plain Pillow loop.

Writes a synthetic set (JPEGs of ``--size`` pixels) to a temporary folder, then times, on the
same files and the same output (``--crop`` square, normalized float32 NHWC batches):

- ``pillow_exact``: ``preprocess_paths`` (CLIP's bicubic resize), one image after another;
- ``pillow_bilinear``: the same loop with a bilinear resize (what the stream computes);
- ``stream``: ``train_stream`` (decode, resize, crop, tokenize, batch, ordered prefetch),
  after the one-off validation pass, which is timed on its own (``validate_s``).

Prints a JSON object (last line). Example::

    python benchmarks/bench_data.py --images 1000 --size 320 --crop 224 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import mlx_caption  # noqa: F401  (BLAS before mlx.core)
from mlx_caption.data.pipeline import train_stream
from mlx_caption.data.preprocess import PreprocessConfig, preprocess_paths
from mlx_caption.data.sources import ImageValidator, load_records, validate_records
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.tokenizer import CaptionTokenizer


def _pillow(paths: list[str], cfg: PreprocessConfig, batch: int) -> float:
    start = time.perf_counter()
    for s in range(0, len(paths) - batch + 1, batch):
        preprocess_paths(paths[s : s + batch], cfg)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=320, help="side of the JPEGs written")
    parser.add_argument("--crop", type=int, default=224, help="output side")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="stream prefetch threads")
    parser.add_argument("--prefetch", type=int, default=4, help="stream batches in flight")
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings")
    parser.add_argument("--dir", help="reuse/keep the data set here (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        t0 = time.perf_counter()
        ann = write_synthetic_dataset(root, images=args.images, seed=0, size=args.size)
        synth_s = time.perf_counter() - t0
        records = load_records("karpathy", ann, root)
        for r in records:
            r.split = "train"
        paths = [r.image for r in records]
        tok = CaptionTokenizer.train([c for r in records for c in r.captions], vocab_size=1000)
        exact = PreprocessConfig(resize_shortest_edge=args.crop, crop_size=args.crop)
        bilinear = PreprocessConfig(
            resize_shortest_edge=args.crop, crop_size=args.crop, resample="bilinear"
        )
        n_used = (len(paths) // args.batch) * args.batch

        validator = ImageValidator()
        t0 = time.perf_counter()
        validate_records(records, validator)
        validate_s = time.perf_counter() - t0

        def stream_once(epoch: int) -> float:
            start = time.perf_counter()
            s = train_stream(
                records,
                tok,
                exact,
                args.batch,
                32,
                seed=0,
                epoch=epoch,
                threads=args.threads,
                prefetch=args.prefetch,
                validator=validator,
            )
            for _ in s:
                pass
            return time.perf_counter() - start

        stream_s = min(stream_once(e) for e in range(args.repeats))
        exact_s = min(_pillow(paths, exact, args.batch) for _ in range(args.repeats))
        bil_s = min(_pillow(paths, bilinear, args.batch) for _ in range(args.repeats))

    result = {
        "benchmark": "data",
        "images": n_used,
        "source_px": args.size,
        "crop_px": args.crop,
        "batch": args.batch,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.system()}",
        "synth_images_per_s": round(args.images / synth_s, 1),
        "validate_images_per_s": round(len(paths) / validate_s, 1),
        "stream_images_per_s": round(n_used / stream_s, 1),
        "pillow_exact_images_per_s": round(n_used / exact_s, 1),
        "pillow_bilinear_images_per_s": round(n_used / bil_s, 1),
    }
    result["stream_speedup_vs_pillow_exact"] = round(
        result["stream_images_per_s"] / result["pillow_exact_images_per_s"], 2
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
