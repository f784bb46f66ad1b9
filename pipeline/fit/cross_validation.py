"""`fit-head --cv K`: K-fold cross-validation whose scores come from rows that chose nothing.

Each fold's training rows are split once more (the same `--val-fraction`, stratified and
group-aware): the inner part trains, the inner held-out part alone drives early stopping and
the learning-rate decay, and the fold's own held-out rows are scored once at the end. So a
fold's score never comes from the rows that picked its epoch.

Usage:
    report, table = cross_validate(store, source, split, config, print)
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.splits import cv_folds, holdout
from pipeline.fit.training import probabilities, solved_probabilities, train_head

SCORED_ON = ("each fold's held-out rows, which took no part in training or in choosing the "
             "epoch (early stopping and learning-rate decay watched {share:.0%} of the fold's "
             "training rows)")


def cross_validate(store, source, split, config, echo, solved_C=None) -> tuple[dict, dict]:
    """K-fold CV over train + val (never test) of the head `config` describes; with
    `solved_C`, a linear head solved exactly at that C on each fold's training rows (it has
    no epoch to choose, so none of them is held out to stop on).

    Returns:
        (report for metrics.json, table for cv_folds.csv: per store row the role it had in each
        fold — "train", "stop" (early stopping) or "scored" — and its out-of-fold probabilities).
    """
    k = config.cv
    pool = np.sort(np.concatenate([split.train, split.val]))
    labels = store.column("labels")
    index = store.row_index
    roles = np.full((len(store), k), "", dtype=object)
    oof = np.zeros((len(store), len(store.class_names)))
    scored_in = np.zeros(len(store), dtype=np.int64)
    folds = []
    for i, (train, rows) in enumerate(cv_folds(pool, labels, index.group, k, config.seed)):
        if solved_C is not None:
            fit_rows, stop_rows, best, stop_loss = train, rows[:0], None, None
            trained = index.with_views(fit_rows, config.train_views)
            probs = solved_probabilities(source.get(trained), store.full_column("labels")[
                trained], source.get(np.sort(rows)), len(store.class_names), config, solved_C)
            accuracy = float(np.mean(probs.argmax(1) == labels[np.sort(rows)]))
        else:
            fit_rows, stop_rows = holdout(train, labels, index.group, config.val_fraction,
                                          config.seed + i, config=config.config_file,
                                          class_names=store.class_names)
            model, history, best = train_head(
                store, source, index.with_views(fit_rows, config.train_views), stop_rows,
                config, echo, prefix=f"fold {i + 1}/{k} ")
            stop_loss = float(history["val_loss"][best - 1])
            _, _, accuracy, probs = probabilities(model, store, source, rows)
        roles[fit_rows, i], roles[stop_rows, i], roles[rows, i] = "train", "stop", "scored"
        oof[rows], scored_in[rows] = probs, i + 1
        folds.append({"fold": i + 1, "n_train": len(fit_rows), "n_stop": len(stop_rows),
                      "n_val": len(rows), "best_epoch": best,
                      "stop_loss": stop_loss,
                      "val_accuracy": accuracy})
        echo(f"fold {i + 1}/{k}: accuracy {accuracy:.4f} on {len(rows)} held-out rows "
             + (f"(epoch {best} chosen on {len(stop_rows)} other rows)" if best else
                "(linear head solved on the fold's other rows)"))
    accs = np.array([f["val_accuracy"] for f in folds])
    share = float(np.mean([f["n_stop"] / (f["n_stop"] + f["n_train"]) for f in folds]))
    report = {"k": k, "grouped": index.has_groups,
              "val_accuracy_mean": float(accs.mean()), "val_accuracy_std": float(accs.std()),
              "val_accuracy_min": float(accs.min()), "val_accuracy_max": float(accs.max()),
              "scored_on": SCORED_ON.format(share=share), "folds": folds}
    echo(f"cross-validation: accuracy {accs.mean():.4f} +/- {accs.std():.4f} over {k} folds "
         f"(min {accs.min():.4f}, max {accs.max():.4f}); scored on {report['scored_on']}")
    return report, {"rows": pool, "roles": roles[pool], "scored_in": scored_in[pool],
                    "probs": oof[pool]}
