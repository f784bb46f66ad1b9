"""Stored vectors that carry (almost) nothing, told in one `warning:` line with the likely cause.

Vectors can pass every NaN check and still say nothing about their inputs: a random-weight
MobileNet at 32 px gives values of about 1e-21, dead activations give exact zeros, and broken
weights or blank inputs give one vector whatever the input. Stage two then fits noise, or
standardising blows rounding up into differences. The check reads an even sample of the rows
just written (at most SAMPLE_ROWS rows and SAMPLE_VALUES values; no pass over the whole store).

    line = degenerate_vectors(store, weights="none")   # None, or "warning: ..."
"""

from __future__ import annotations

import numpy as np

from pipeline.extract.journal import sample_id_of

SAMPLE_ROWS = 256
SAMPLE_VALUES = 4_000_000  # float64 values held at once: 32 MB
MOSTLY_ZEROS = 0.95  # share of the values that are exactly 0
NEARLY_ZERO_RMS = 1e-6  # root mean square of the values
SAME_DISTANCE = 1e-4  # two vectors are the same within this share of the longer one's length
SAME_PAIRS = 0.5  # share of the pairs of different files that may be the same


def degenerate_vectors(store, weights: str) -> str | None:
    """One warning line when the store's vectors are mostly zeros, nearly zero, or the same
    for different files; None when they look like vectors."""
    n = len(store)
    if n == 0:
        return None
    row_size = int(np.prod(store.feature_shape, dtype=np.int64)) or 1
    take = int(max(2, min(SAMPLE_ROWS, SAMPLE_VALUES // row_size, n)))
    rows = np.unique(np.linspace(0, n - 1, min(take, n)).round().astype(np.int64))
    x = store.read_rows(rows).reshape(len(rows), -1).astype(np.float64)
    random = weights == "none"
    zeros = float(np.mean(x == 0))
    if zeros >= MOSTLY_ZEROS:
        cause = ("random weights (--weights none)" if random else
                 "weights that do not fit this backbone or --layer, or blank inputs")
        return (f"warning: {zeros:.0%} of the stored values are exactly 0 (a sample of "
                f"{len(rows)} rows): dead activations; likely cause: {cause}. Check --weights "
                "and --layer before training on these vectors.")
    rms = float(np.sqrt(np.mean(x ** 2)))
    if rms < NEARLY_ZERO_RMS:
        cause = ("random weights (--weights none), whose activations shrink layer by layer, "
                 "more so at a small --input-size" if random else
                 "weights that do not fit this backbone, or a very small --input-size")
        return (f"warning: the stored vectors are nearly zero (root mean square {rms:.1e} over "
                f"{len(rows)} rows); likely cause: {cause}. Use pretrained weights (--weights "
                "imagenet or a file) or a larger --input-size.")
    files = [sample_id_of(i, "clip_index" in store.file) for i in store.column("ids")[rows]]
    share = _same_pairs(x, files)
    if share is not None and share >= SAME_PAIRS:
        return (f"warning: {share:.0%} of the pairs of different files among {len(rows)} rows "
                f"have the same vector (within {SAME_DISTANCE:g} of its length): the vectors do "
                "not depend on the input; likely cause: broken weights (check --weights) or "
                "blank or identical inputs.")
    return None


def _same_pairs(x: np.ndarray, files: list) -> float | None:
    """The share of the pairs of rows of different files whose vectors are the same, or None
    when there is no such pair."""
    sq = np.einsum("ij,ij->i", x, x)
    distance2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    longer2 = np.maximum(sq[:, None], sq[None, :])
    same = distance2 <= (SAME_DISTANCE ** 2) * np.maximum(longer2, np.finfo(np.float64).tiny)
    owner = np.unique(np.asarray(files, dtype=object), return_inverse=True)[1]
    other = np.triu(owner[:, None] != owner[None, :], k=1)
    if not other.any():
        return None
    return float(same[other].mean())
