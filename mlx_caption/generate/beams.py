"""Beam-search bookkeeping on the host: finished hypotheses per image, and turning one step's
top candidates into the next step's beams.

The rules are transformers' (``generate`` with ``num_beams``): each image keeps its
``num_beams`` best finished hypotheses, ranked by ``logprob / generated_length **
length_penalty`` (the prompt not counted); an end token among the top ``num_beams``
candidates finishes a hypothesis (one ranked lower is dropped); the next beams are the best
``num_beams`` candidates that do not end; at the last step (``max_length``) the top
``num_beams`` candidates all finish there, ended or not; an image is done once it holds
``num_beams`` hypotheses and either ``early_stopping`` is set or no running beam can still
beat the worst of them (at its current length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Hypothesis:
    """A caption candidate: its ranking score, log-probability, tokens and attention rows."""

    score: float
    logprob: float
    tokens: list[int]
    finished: bool
    attention: np.ndarray | None


@dataclass
class FinishedHypotheses:
    """The best ``size`` hypotheses of one image, best first."""

    size: int
    items: list[Hypothesis] = field(default_factory=list)

    def add(self, hyp: Hypothesis) -> None:
        if len(self.items) < self.size or hyp.score > self.items[-1].score:
            self.items.append(hyp)
            self.items.sort(key=lambda h: -h.score)
            del self.items[self.size :]

    @property
    def full(self) -> bool:
        return len(self.items) >= self.size

    @property
    def worst_score(self) -> float:
        return self.items[-1].score


@dataclass
class BeamStep:
    """The next beams of every image: which row each continues, its new token and score."""

    rows: np.ndarray  # (images * beams,) the row each new beam continues
    tokens: np.ndarray  # (images * beams,) the token it appends
    scores: np.ndarray  # (images, beams) cumulative log-probabilities; -inf for none


def advance(
    candidates: np.ndarray,
    scores: np.ndarray,
    finished: list[FinishedHypotheses],
    done: np.ndarray,
    *,
    num_beams: int,
    vocab: int,
    end: int,
    pad: int,
    length: int,
    length_penalty: float,
    early_stopping: bool,
    last: bool,
    finish: Callable[[int, int, float, float], Hypothesis],
) -> BeamStep:
    """One beam-search step on the host.

    ``candidates`` (images, C) are flat ``beam * vocab + token`` indices with cumulative
    ``scores``; ``length`` is the generated length after this step and ``last`` says it is the
    last step. ``finish(row, token, score, norm)`` builds the :class:`Hypothesis` that ends
    with ``token`` on ``row``. Updates ``finished`` and ``done`` in place.
    """
    images = len(finished)
    norm = float(length) ** length_penalty
    rows = np.zeros(images * num_beams, dtype=np.int64)
    tokens = np.full(images * num_beams, pad, dtype=np.int64)
    new_scores = np.full((images, num_beams), -np.inf)
    for b in range(images):
        base = b * num_beams
        rows[base : base + num_beams] = base  # dead/filler rows copy the first one
        if done[b]:
            continue
        n_live = 0
        for rank, j in enumerate(np.argsort(-scores[b], kind="stable")):
            score = scores[b, j]
            if not np.isfinite(score):
                break
            beam, tok = divmod(int(candidates[b, j]), vocab)
            row = base + beam
            if tok == end or last:
                # As in transformers: an end token ranked below the top num_beams is dropped.
                if rank < num_beams:
                    finished[b].add(finish(row, tok, score, norm))
                continue
            rows[base + n_live] = row
            tokens[base + n_live] = tok
            new_scores[b, n_live] = score
            n_live += 1
            if n_live == num_beams:
                break
        if n_live == 0:
            done[b] = True  # the last step, or nothing left to extend (tiny vocabularies)
        elif finished[b].full:
            best_running = new_scores[b].max()
            done[b] = early_stopping or best_running / norm <= finished[b].worst_score
    return BeamStep(rows, tokens, np.where(done[:, None], -np.inf, new_scores))
