"""Pure CTC greedy decoding: per-step class probabilities → text and confidence.

numpy only. Class 0 is the CTC blank; class i ≥ 1 is ``charset[i - 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Charset:
    """The characters a recogniser emits, in class order after the blank."""

    chars: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1

    def allowed_mask(self, allowed_chars: str) -> np.ndarray:
        """Boolean (num_classes,) mask: the blank plus every class whose character is in
        ``allowed_chars``. An empty string allows everything."""
        if not allowed_chars:
            return np.ones(self.num_classes, dtype=bool)
        wanted = set(allowed_chars)
        return np.array([True] + [c in wanted for c in self.chars], dtype=bool)


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
    results = []
    for ids, confidences in zip(best, best_prob):
        keep = ids != 0
        keep[1:] &= ids[1:] != ids[:-1]
        kept = ids[keep]
        text = "".join(charset.chars[i - 1] for i in kept)
        score = float(confidences[keep].mean()) if kept.size else 0.0
        results.append(Decoded(text, score))
    return results
