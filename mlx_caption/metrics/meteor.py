"""METEOR 1.5 as one long-lived Java process, shared by every scoring call.

METEOR's JVM loads a large paraphrase table before it answers, which is slow, so one process
is started on first use and kept for the life of the Python process (training evaluates many
times); :func:`close_meteor` ends it early, and it is ended at exit.
"""

from __future__ import annotations

import atexit
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from mlx_caption.metrics.java import meteor_jar


class MeteorProcess:
    """METEOR 1.5 over stdio, the protocol and arguments of pycocoevalcap's ``Meteor``.

    Unlike that class it fails with an error (instead of hanging on a held lock) when the
    JVM dies, and it can be closed explicitly.
    """

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        cmd = [
            "java",
            "-jar",
            "-Xmx2G",
            meteor_jar().name,
            "-",
            "-",
            "-stdio",
            "-l",
            "en",
            "-norm",
        ]
        self._proc = subprocess.Popen(
            cmd,
            cwd=meteor_jar().parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lock = threading.Lock()

    def alive(self) -> bool:
        """Whether the JVM is still running."""
        return self._proc.poll() is None

    def _ask(self, line: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((line + "\n").encode())
        self._proc.stdin.flush()
        return self._read()

    def _read(self) -> str:
        assert self._proc.stdout is not None
        out = self._proc.stdout.readline()
        if not out:
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"METEOR process ended unexpectedly: {err}")
        return out.decode().strip()

    def compute_score(
        self, gts: Mapping[Any, list[str]], res: Mapping[Any, list[str]]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-image scores, as ``pycocoevalcap.meteor.Meteor.compute_score``."""
        with self._lock:
            stats = []
            for key in gts:
                hyp = res[key][0].replace("|||", "").replace("  ", " ")
                stats.append(self._ask(" ||| ".join(("SCORE", " ||| ".join(gts[key]), hyp))))
            assert self._proc.stdin is not None
            self._proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            self._proc.stdin.flush()
            scores = [float(self._read()) for _ in stats]
            return float(self._read()), scores

    def close(self) -> None:
        """End the JVM (idempotent)."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


_meteor: MeteorProcess | None = None
_meteor_lock = threading.Lock()


def shared_meteor() -> MeteorProcess:
    """The process-wide METEOR process, started on first use (and again if it died)."""
    global _meteor
    with _meteor_lock:
        if _meteor is None or not _meteor.alive():
            _meteor = MeteorProcess()
        return _meteor


def close_meteor() -> None:
    """End the shared METEOR process (it is restarted on next use)."""
    global _meteor
    with _meteor_lock:
        if _meteor is not None:
            _meteor.close()
            _meteor = None


atexit.register(close_meteor)
