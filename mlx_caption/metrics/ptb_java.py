"""pycocoevalcap's own tokenization: CoreNLP's Java ``PTBTokenizer``, one JVM run per call."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlx_caption.metrics.java import ptb_jar
from mlx_caption.metrics.ptb import drop_punctuation, one_line


def tokenize_java(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap's tokenization: CoreNLP PTBTokenizer (one JVM run), punctuation dropped."""
    captions = [one_line(c) for c in captions]
    if not captions:
        return []
    with tempfile.TemporaryDirectory(prefix="mlx-caption-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes("\n".join(captions).encode("utf-8"))
        cmd = ["java", "-cp", str(ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer"]
        proc = subprocess.run(
            [*cmd, "-preserveLines", "-lowerCase", str(path)], capture_output=True
        )
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    # Trailing blank captions may leave no output line; anything else is a real mismatch.
    missing = captions[len(lines) :]
    if any(c.strip() for c in missing):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(captions)} captions")
    lines += [""] * len(missing)
    return [drop_punctuation(line) for line in lines[: len(captions)]]
