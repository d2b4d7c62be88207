"""Pure CTC greedy decoding: per-step class probabilities → text and confidence.

numpy only. Class 0 is the CTC blank; class i ≥ 1 is ``charset[i - 1]``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np


def is_cjk(char: str) -> bool:
    """A CJK unified ideograph (basic block or extension A)."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


@dataclass(frozen=True, slots=True)
class Charset:
    """The characters a recogniser emits, in class order after the blank."""

    chars: tuple[str, ...]
    # The classes that are not CJK ideographs (blank included) as (start, stop) runs of class ids;
    # None when the charset has no CJK. Chinese mass is 1 minus their sum: they are far fewer than
    # the CJK classes, and in the shipped charsets two runs, so summed as slices, not gathered.
    other_runs: tuple[tuple[int, int], ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cjk = np.array([False] + [is_cjk(c) for c in self.chars], dtype=bool)
        object.__setattr__(self, "other_runs", class_runs(~cjk) if cjk.any() else None)

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1

    def allowed_mask(self, allowed_chars: str) -> np.ndarray:
        """Boolean (num_classes,) mask: the blank plus every class whose character is in
        ``allowed_chars``. An empty string allows everything."""
        if not allowed_chars:
            return np.ones(self.num_classes, dtype=bool)
        # Each also in its NFKC form: full-width digits from a Chinese input method (０-９) mean the
        # digits the reader writes as 0-9; masked to the full-width ones alone it read nothing.
        wanted = set(allowed_chars) | set(unicodedata.normalize("NFKC", allowed_chars))
        return np.array([True] + [c in wanted for c in self.chars], dtype=bool)


def class_runs(selected: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The True entries of a boolean vector as (start, stop) runs, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], selected, [False])).astype(np.int8)))
    return tuple((int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2]))


def load_charset(text: str, space_appended: bool) -> Charset:
    """A Charset from a dictionary file's text (one character per line, CRLF tolerated)."""
    chars = [line.rstrip("\r") for line in text.split("\n")]
    while chars and chars[-1] == "":
        chars.pop()
    if space_appended:
        chars.append(" ")
    return Charset(tuple(chars))


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    score: float  # mean probability of the emitted characters; 0.0 for empty text
    # Highest probability mass on CJK classes at any time step: a glyph the reader saw as
    # possibly Chinese even when a Latin character or the blank won the step.
    cjk_mass: float = 0.0


def ctc_greedy(probs: np.ndarray, charset: Charset, mask: np.ndarray | None = None) -> list[Decoded]:
    """Greedy CTC decode of a batch.

    probs: float32 (N, T, C) softmax probabilities (C == charset.num_classes).
    mask: optional boolean (C,) of classes allowed to win; masking happens on the
    probabilities before the argmax, so a disallowed character can never be emitted and
    the step falls to the best allowed class instead (not filtered from the string after).
    The kept probabilities are renormalised over the allowed classes.
    """
    if probs.ndim != 3 or probs.shape[2] != charset.num_classes:
        raise ValueError("expected (N, T, %d) probabilities, got %s" % (charset.num_classes, probs.shape))
    if mask is not None and not mask.all():
        allowed = probs * mask[None, None, :]
        total = allowed.sum(axis=2, keepdims=True)
        probs = allowed / np.maximum(total, 1e-12)
    best = probs.argmax(axis=2)
    best_prob = np.take_along_axis(probs, best[:, :, None], axis=2)[:, :, 0]
    if charset.other_runs is not None:
        # Slices summed, not a matmul: numpy's BLAS would wake its thread pool for every line.
        other = sum(probs[:, :, start:stop].sum(axis=2) for start, stop in charset.other_runs)
        cjk_mass = 1.0 - other.min(axis=1)
    else:
        cjk_mass = np.zeros(len(probs))
    results = []
    for ids, confidences, mass in zip(best, best_prob, cjk_mass):
        keep = ids != 0
        keep[1:] &= ids[1:] != ids[:-1]
        kept = ids[keep]
        text = "".join(charset.chars[i - 1] for i in kept)
        score = float(confidences[keep].mean()) if kept.size else 0.0
        results.append(Decoded(text, score, float(mass)))
    return results
