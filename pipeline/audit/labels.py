"""Suspected label errors: out-of-sample probabilities, then cleanlab's confident learning.

Probabilities must be out-of-sample, or a model that memorised a wrong label vouches for it:
train rows get cross-validated probabilities (group-aware folds, as fit-head splits), and val
and test rows get those of a model fit on all train rows. The model is a logistic regression on
standardised vectors, the linear probe that transfer-learning papers use to judge features.

Usage:
    probs = out_of_sample_probabilities(x, labels, train_rows, groups, folds=5, seed=0)
    issues = rank_label_issues(labels, probs)
"""

from __future__ import annotations

import warnings

import numpy as np

from pipeline.audit.passes import bar
from pipeline.evaluation.splits import cv_folds


def _probe(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Measured on flowers5 + MobileNet, 30 flipped labels in 1,000 train photos, the same five
    # shuffled folds: flips among the 60 least self-confident train rows were 12 with C = 0.1 on
    # standardised vectors (13 with C = 0.01 or 1) and 11 for the plain baseline (raw vectors,
    # C = 1), which also converged several times slower. A flip or two is within fold noise:
    # the baseline gave 15 with unshuffled folds.
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000,
                                                              random_state=seed))


def _probabilities(fitted, x: np.ndarray) -> np.ndarray:
    if hasattr(fitted, "predict_proba"):
        return fitted.predict_proba(x)
    # An SVM without probability=True gives decision scores: a softmax keeps their ranking.
    scores = np.asarray(fitted.decision_function(x), dtype=np.float64)
    if scores.ndim == 1:
        scores = np.stack([-scores, scores], axis=1) / 2.0
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def out_of_sample_probabilities(x: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                                groups: np.ndarray, folds: int = 5,
                                seed: int = 0, model=None, views=None) -> np.ndarray:
    """(N, K) probabilities no row's own label helped to make.

    Args:
        x: (N, D) vectors (all labelled rows of the store).
        labels: (N,) class indices.
        train_rows: rows cross-validated among themselves; the others are scored by a model
            fit on all of these.
        groups: each row's group (the store's `row_index.group`, where a row without one is
            a group of its own); folds never split a group.
        folds: number of cross-validation folds.
        seed: seed of the folds and the model.
        model: an unfitted scikit-learn classifier to use instead of the logistic regression
            (e.g. a grid-search run's best pipeline, `audit --run`); cloned for every fit.
        views: (vectors, labels, row of x each belongs to) of augmented views: every fit also
            trains on the views of its own training rows, and no view is ever scored.
    """
    from sklearn.base import clone

    n_classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), n_classes))
    model = _probe(seed) if model is None else model

    def fit_predict(fit_rows, score_rows):
        x_fit, y_fit = x[fit_rows], labels[fit_rows]
        if views is not None and len(views[2]):
            of_fit = np.isin(views[2], fit_rows)
            x_fit = np.concatenate([x_fit, views[0][of_fit]])
            y_fit = np.concatenate([y_fit, views[1][of_fit]])
        fitted = clone(model).fit(x_fit, y_fit)
        out = np.zeros((len(score_rows), n_classes))
        out[:, fitted.classes_] = _probabilities(fitted, x[score_rows])
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds
        # fit-head's and grid-search's folds, from the same groups
        for fit_rows, score_rows in cv_folds(train_rows, labels, groups, folds, seed):
            probs[score_rows] = fit_predict(fit_rows, score_rows)
        others = np.setdiff1d(np.arange(len(labels)), train_rows)
        if len(others):
            probs[others] = fit_predict(train_rows, others)
    return probs


# Above this many labelled rows the probe is `streamed_lda_probabilities` on reduced vectors: a
# logistic regression on 100k x 2048 vectors of 100 classes took 11 minutes on two busy cores.
FULL_PROBE_ROWS = 50_000
LDA_SHRINKAGE = 0.1  # share of the pooled covariance replaced by its mean variance
LDA_BLOCK_ROWS = 65_536


def _lda_model(counts, sums, scatter):
    """(coef (K, W), intercept (K,)) of linear discriminant analysis from the training rows'
    class counts (K,), class sums (K, W) and scatter (W, W) = sum of x x^T. A class without
    training rows gets probability 0."""
    present = counts > 0
    n, width = counts.sum(), sums.shape[1]
    means = np.where(present[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
    within = (scatter - sums.T @ means) / max(n - present.sum(), 1)
    covariance = ((1 - LDA_SHRINKAGE) * within
                  + LDA_SHRINKAGE * np.trace(within) / width * np.eye(width))
    coef = np.linalg.solve(covariance, means.T).T
    intercept = np.where(present, -0.5 * (coef * means).sum(axis=1)
                         + np.log(np.maximum(counts, 1) / n), -np.inf)
    return coef, intercept


def _lda_predict(model, x: np.ndarray) -> np.ndarray:
    coef, intercept = model
    out = np.empty((len(x), len(intercept)), dtype=np.float32)
    for a in range(0, len(x), LDA_BLOCK_ROWS):
        scores = np.asarray(x[a:a + LDA_BLOCK_ROWS], dtype=np.float64) @ coef.T + intercept
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        out[a:a + LDA_BLOCK_ROWS] = scores / scores.sum(axis=1, keepdims=True)
    return out


def streamed_lda_probabilities(x: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                               groups: np.ndarray, folds: int = 5, seed: int = 0,
                               progress: bool = False) -> np.ndarray:
    """(N, K) float32 out-of-sample probabilities of a linear discriminant on reduced vectors.

    The large-store probe: each fold's class counts, class sums and scatter are summed once,
    a block of rows at a time; the model of a fold is the totals less that fold's own, so
    cross-validation costs one pass and K small solves, however many rows there are. Train
    rows get their fold's model (the same group-aware folds as the logistic probe), val and
    test rows the model of all train rows.
    """
    n_classes, width = int(labels.max()) + 1, x.shape[1]
    fold_of = np.full(len(labels), -1)
    for f, (_, score_rows) in enumerate(cv_folds(train_rows, labels, groups, folds, seed)):
        fold_of[score_rows] = f
    counts = np.zeros((folds, n_classes))
    sums = np.zeros((folds, n_classes, width))
    scatter = np.zeros((folds, width, width))
    probs = np.zeros((len(labels), n_classes), dtype=np.float32)
    with bar(2 * len(labels), "label probe (LDA)", progress) as progress_bar:
        for a in range(0, len(labels), LDA_BLOCK_ROWS):
            b = min(a + LDA_BLOCK_ROWS, len(labels))
            block, fold, label = np.asarray(x[a:b], np.float64), fold_of[a:b], labels[a:b]
            for f in np.unique(fold[fold >= 0]).tolist():
                mine, y = block[fold == f], label[fold == f]
                one_hot = np.zeros((len(y), n_classes))
                one_hot[np.arange(len(y)), y] = 1.0
                counts[f] += one_hot.sum(axis=0)
                sums[f] += one_hot.T @ mine
                scatter[f] += mine.T @ mine
            progress_bar.update(b - a)
        totals = (counts.sum(axis=0), sums.sum(axis=0), scatter.sum(axis=0))
        for f in range(folds):
            rows = np.flatnonzero(fold_of == f)
            model = _lda_model(totals[0] - counts[f], totals[1] - sums[f],
                               totals[2] - scatter[f])
            probs[rows] = _lda_predict(model, x[rows])
            progress_bar.update(len(rows))
        others = np.flatnonzero(fold_of < 0)
        if len(others):
            probs[others] = _lda_predict(_lda_model(*totals), x[others])
            progress_bar.update(len(others))
    return probs


def rank_label_issues(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Rows cleanlab flags as label issues, most suspicious first.

    Args:
        labels: (N,) given class indices.
        probs: (N, K) out-of-sample probabilities.

    Returns:
        {"rows": flagged rows ranked by self-confidence (lowest first), "suggested": the most
        probable class of each, "score": cleanlab's label quality (0..1, low = suspicious),
        "quality": that score for every row}.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.clip(probs, 1e-9, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes with few examples
        rows = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence",
                                 n_jobs=1)  # in this process: no copies of a big probs array
    rows = np.asarray(rows, dtype=np.int64)
    return {"rows": rows, "suggested": probs[rows].argmax(axis=1), "score": quality[rows],
            "quality": quality}


# A flagged row is shown when the probe, at the confidence it gives that row, agrees with the
# given labels on at least this share of the held-out rows: its disagreement is then more
# likely the label's fault than its own. 0.95 keeps false alarms on clean data near 5% at most.
CREDIBLE_AGREEMENT = 0.95
CREDIBLE_MIN_ROWS = 20  # the agreement is judged over at least this many rows


def credible_issues(issues: dict, labels: np.ndarray, probs: np.ndarray,
                    agreement: float = CREDIBLE_AGREEMENT,
                    min_rows: int = CREDIBLE_MIN_ROWS) -> tuple[dict, dict]:
    """Keeps the flagged rows where the probe's own held-out accuracy makes them credible.

    The probe's out-of-sample predictions, most confident first: the confidence floor is the
    lowest confidence down to which at least `agreement` of the rows at or above it agree
    with their given label (counted over `min_rows` rows or more). A flagged row whose
    suggested label has at least that confidence is kept; the others are the probe's own
    uncertainty, not evidence against the label.

    Returns:
        (the issues dict with only the credible rows, facts for summary.json).
    """
    confidence = probs.max(axis=1)
    agrees = probs.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(agrees[order]) / np.arange(1, len(order) + 1)
    good = np.flatnonzero((running >= agreement) & (np.arange(len(order)) + 1 >= min_rows))
    floor = float(confidence[order[good[-1]]]) if len(good) else float("inf")
    keep = confidence[issues["rows"]] >= floor
    facts = {"held_out_accuracy": round(float(agrees.mean()), 4) if len(agrees) else None,
             "agreement_needed": agreement, "confidence_floor":
             round(floor, 4) if np.isfinite(floor) else None,
             "rows_above_floor": int(len(good) and good[-1] + 1),
             "flagged_by_cleanlab": int(len(issues["rows"])), "shown": int(keep.sum())}
    kept = {name: (value[keep] if name != "quality" else value) for name, value in issues.items()}
    return kept, facts
