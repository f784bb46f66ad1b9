"""Does the head beat the plain linear probe? fit-head checks it on every small store.

The probe is `make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))`,
trained on exactly the rows the head trained on (augmented views included) and scored on the
head's honest split. Where it scores higher, fit-head says so and points to grid-search, which
compares such models with the head on the same store; metrics.json records both figures.
"""

from __future__ import annotations

import warnings

import numpy as np

# Larger stores skip the probe: it would cost more than the head (and such stores are where
# the head's defaults were measured to win).
MAX_PROBE_ROWS = 5_000
MAX_PROBE_DIM = 4096


def compare_with_linear_probe(store, source, train_rows, scored, split_name: str,
                              echo) -> dict | None:
    """{"accuracy", "head_accuracy", "split", "head_wins"}; None when the store is too large.

    `scored` is the head's (ids, labels, accuracy, probs) on `split_name`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    dim = int(np.prod(store.feature_shape))
    if len(train_rows) > MAX_PROBE_ROWS or dim > MAX_PROBE_DIM:
        return None
    ids, y_scored, head_accuracy, _ = scored
    rows = np.sort(np.flatnonzero(np.isin(store.column("ids"), ids)))

    def vectors(r):
        x = source.get(r) if source is not None else store.read_rows(r)
        return x.reshape(len(x), -1)

    labels = store.full_column("labels")
    y_train = labels[train_rows]
    if len(np.unique(y_train)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny stores
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        probe.fit(vectors(np.asarray(train_rows)), y_train)
        accuracy = float(np.mean(probe.predict(vectors(rows)) == labels[rows]))
    result = {"accuracy": accuracy, "head_accuracy": float(head_accuracy), "split": split_name,
              "model": "StandardScaler + LogisticRegression(C=1.0)",
              "head_wins": bool(head_accuracy >= accuracy)}
    if not result["head_wins"]:
        echo(f"note: a plain linear probe (StandardScaler + LogisticRegression, C=1) on the same "
             f"training rows scores {accuracy:.4f} on {split_name}, above this head's "
             f"{head_accuracy:.4f}; run grid-search on this store and use its winner")
    return result
