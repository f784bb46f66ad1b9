"""`predict --tta K`: each file's probabilities averaged over its plain view and K augmented views.

The views are made by extract's own `--views` (pipeline/extract/views.py) with the recipe and
seed of the run's training views when it had some (else `--augment`), so a file's view v is
the same pixels at training and at prediction time. Averaging is of probabilities, after the
run's calibration, with every view weighted alike.

    opts = tta_extract_options(cfg, trained_provenance)      # merged into predict's extract
    probs = tta_average(run, store, plain_probs)
"""

from __future__ import annotations

import numpy as np

DEFAULT_RECIPE = "flip,crop=0.7-1.0"


def tta_extract_options(cfg, trained: dict) -> dict:
    """The extract options that add `cfg.tta` views (none when --tta is 0)."""
    if not cfg.tta:
        return {}
    recorded = trained.get("views") or {}
    return {"views": int(cfg.tta),
            "augment": cfg.augment or recorded.get("recipe") or DEFAULT_RECIPE,
            "view_seed": int(recorded.get("seed", 0))}


def tta_average(run, store, plain_probs: np.ndarray) -> np.ndarray:
    """Mean of the plain rows' probabilities and those of every view of the same file."""
    index = store.row_index
    views = index.views_of(np.arange(index.n_plain))
    if not len(views):
        return plain_probs
    total = np.array(plain_probs, dtype=np.float64)
    count = np.ones(len(total))
    for start in range(0, len(views), 4096):
        rows = views[start:start + 4096]
        np.add.at(total, index.plain[rows], run.predict_proba(store.read_rows(rows)))
        np.add.at(count, index.plain[rows], 1)
    return total / count[:, None]
