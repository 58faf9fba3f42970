"""Benchmarks: pure MLX against the PT bridge, each figure for both paths in one run.

``mlx-caption bench`` (and ``python benchmarks/run.py``) run :func:`suite.run_suite`;
each section (encoder, end to end, decoding, training, data) is a module with a function
that returns a JSON-able dict, measured after warm-up as the median of several repeats,
the two sides interleaved so a machine shared with other work slows both alike.
"""
