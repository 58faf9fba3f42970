"""Java and pycocoevalcap's jars: CoreNLP 3.4.1 (the PTB tokenizer) and METEOR 1.5."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path


def _package_dir() -> Path:
    import pycocoevalcap

    return Path(list(pycocoevalcap.__path__)[0])


def ptb_jar() -> Path:
    """pycocoevalcap's Stanford CoreNLP jar (holds ``PTBTokenizer``)."""
    return _package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"


def meteor_jar() -> Path:
    """pycocoevalcap's METEOR 1.5 jar (its paraphrase data sits beside it)."""
    return _package_dir() / "meteor" / "meteor-1.5.jar"


@functools.lru_cache(maxsize=1)
def java_available() -> bool:
    """Whether a working ``java`` and pycocoevalcap's jars are here (checked once per process).

    Runs ``java -version`` rather than trusting ``which``: macOS ships a ``/usr/bin/java``
    stub that only asks to install a JDK.
    """
    java = shutil.which("java")
    if java is None or not ptb_jar().is_file() or not meteor_jar().is_file():
        return False
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0
