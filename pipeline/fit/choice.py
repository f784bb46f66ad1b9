"""The head fit-head trains when no head option is given: chosen by cross-validation on the
training rows alone (never the validation, calibration or test rows).

The candidates:
  * linear heads (logistic regression) with the inputs standardised or L2-normalised, over
    the 17 values of C in `linear.C_GRID` (1e-4 to 1e4), each fold's path solved by L-BFGS
    from the strongest penalty up, every solution warm-starting the next. A path stops once
    neither the pooled accuracy nor the log loss has bettered its best for
    `PATH_PATIENCE` values in a row: weaker penalties only fit the training rows closer;
  * one hidden layer (`HIDDEN_UNITS`, dropout 0.5, fit-head's Adam training and early
    stopping on a share of each fold's training rows) at the L2 values of `HIDDEN_L2`, on
    the first `HIDDEN_FOLDS` folds only, where every class has at least
    `HIDDEN_MIN_PER_CLASS` rows (its cost is a Keras training per fold, the linear path's a
    few seconds).

The folds are stratified and group-aware (`splits.cv_folds`, groups from the row index);
views train only where their file trains, and every score is on plain rows. There are as
many folds as the classes allow, at most `MOST_FOLDS` (`LARGE_FOLDS` on large data). The
best candidate of a scaling has the highest pooled out-of-fold accuracy, then the lowest log
loss; L2-normalised inputs win only where their best beats the standardised best on accuracy
and log loss both, and a hidden head must beat the linear winner's accuracy on the same
held-out rows.

Usage:
    choice = choose_head(x_of, labels, rows, groups, n_classes, config)
    choice.options   # hidden_units, standardize, l2_normalize, dropout (+ C for a linear head)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import DataError
from pipeline.evaluation.splits import cv_folds
from pipeline.fit import linear

MOST_FOLDS = 5
LARGE_ROWS, LARGE_FOLDS = 2000, 3  # above this many rows, fewer folds: each costs a path
PATH_PATIENCE = 3
HIDDEN_UNITS = (256,)
HIDDEN_OPTIONS = {"hidden_units": HIDDEN_UNITS, "dropout": 0.5, "standardize": True,
                  "l2_normalize": False}
HIDDEN_L2 = (3e-2,)
HIDDEN_FOLDS = 2
HIDDEN_MIN_PER_CLASS = 200


@dataclass
class HeadChoice:
    """What the cross-validation found: every candidate's scores and the winner."""

    candidates: list  # dicts: form, scaling, C or l2, accuracy, log_loss, n_rows, folds
    winner: dict
    k: int  # folds
    n_rows: int  # rows scored out of fold
    folds: list = field(default_factory=list)  # (training rows, held-out rows) per fold
    notes: list = field(default_factory=list)  # what was not tried, and why

    @property
    def linear(self) -> bool:
        return self.winner["form"] == "linear"

    @property
    def options(self) -> dict:
        """fit-head options of the winner; a linear head's l2 follows from C and the rows it
        is solved on (`linear.keras_l2`), so it is set once those are known."""
        if not self.linear:
            return {**HIDDEN_OPTIONS, "l2": self.winner["l2"]}
        standardize, l2_normalize = linear.SCALINGS[self.winner["scaling"]]
        return {"hidden_units": (), "standardize": standardize, "l2_normalize": l2_normalize,
                "dropout": 0.0}

    def report(self) -> dict:
        return {"chosen_by": f"{self.k}-fold cross-validation on the training rows",
                "n_rows": self.n_rows, "folds": self.k, "winner": self.winner,
                "candidates": self.candidates, "notes": self.notes}

    def table(self) -> list[str]:
        """A short candidate table: the best C of each scaling, the hidden heads, the winner."""
        lines = [f"head chosen by {self.k}-fold cross-validation on {self.n_rows} training rows "
                 "(accuracy out of fold, log loss):"]
        best = {}
        for c in self.candidates:
            key = (c["form"], c["scaling"], c.get("l2") if c["form"] == "hidden" else None)
            if key not in best or _rank(c) < _rank(best[key]):
                best[key] = c
        for c in sorted(best.values(), key=_rank):
            lines.append(f"  {describe(c):<42} {c['accuracy']:.4f}  {c['log_loss']:.4f}"
                         f"  ({c['n_rows']} rows, {c['folds']} folds)"
                         + ("  <- chosen" if c is self.winner else ""))
        return lines + [f"note: {n}" for n in self.notes]


def describe(candidate: dict) -> str:
    if candidate["form"] == "linear":
        return f"linear, {candidate['scaling']}, C={candidate['C']:.3g}"
    return (f"hidden {','.join(map(str, HIDDEN_UNITS))}, {candidate['scaling']}, "
            f"l2={candidate['l2']:.3g}")


def _rank(candidate: dict):
    return (-candidate["accuracy"], candidate["log_loss"])


def fold_count(y: np.ndarray, g: np.ndarray, n_rows: int) -> int:
    """As many folds as every class can fill (rows, or groups where groups join rows), at most
    MOST_FOLDS (LARGE_FOLDS above LARGE_ROWS rows)."""
    grouped = len(set(g.tolist())) < len(g)
    per_class = [len(set(g[y == c].tolist())) if grouped else int((y == c).sum())
                 for c in np.unique(y)]
    return min(LARGE_FOLDS if n_rows > LARGE_ROWS else MOST_FOLDS, min(per_class))


def _scores(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    picked = np.clip(probs[np.arange(len(y)), y], 1e-15, None)
    return float(np.mean(probs.argmax(1) == y)), float(-np.mean(np.log(picked)))


def choose_head(x_of, labels, rows, groups, n_classes: int, config, with_views=None,
                hidden_probs=None, class_weight=None, class_names=None) -> HeadChoice:
    """Cross-validates the candidates on `rows` and returns the choice.

    Args:
        x_of: callable(rows) -> the vectors of those rows.
        labels, groups: every row's class index and group (indexed by row).
        rows: the plain training rows to choose on.
        n_classes: classes of the head's output.
        config: fit-head's settings (seed, class_weight, train_views, spatial).
        with_views: callable(rows) -> those rows and the views that train with them.
        hidden_probs: callable(train_rows, held_rows, l2, fold) -> held-out probabilities of
            a hidden head trained on the plain `train_rows` (it holds out its own
            early-stopping rows and adds their views); None: the hidden form is not tried.
        class_weight: one weight per class, in place of `config.class_weight`.
        class_names: names for the refusal of a class with fewer than 2 rows.

    Raises:
        DataError: a class has fewer than 2 rows.
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    y, g = labels[rows], np.asarray(groups, dtype=object)[rows]
    counts = np.bincount(y, minlength=n_classes)
    short = [c for c in np.flatnonzero(counts) if counts[c] < 2]
    if short or (counts > 0).sum() < 2:
        named = ", ".join(str(class_names[c]) if class_names is not None else str(c)
                          for c in short) or "all but one"
        raise DataError(f"too few training rows to choose a head: every class needs at least 2 "
                        f"and class {named} has {counts[short[0]] if short else 0}; add rows "
                        "of it, or leave it out of the data")
    k = fold_count(y, g, len(rows))
    notes = []
    if k < 2:
        raise DataError("too few groups to cross-validate: a class has all its rows in one "
                        "group; add groups, or give the head with options (e.g. --hidden-units "
                        "\"\" --l2 0.001)")
    folds = [(np.sort(a), np.sort(b)) for a, b in cv_folds(rows, labels, groups, k,
                                                                 config.seed)]
    with_views = with_views or (lambda r: r)
    candidates, oof = [], {}
    for scaling in linear.SCALINGS:
        found, probs = _linear_path(x_of, labels, folds, n_classes, scaling, config, with_views,
                                    config.class_weight if class_weight is None else class_weight)
        candidates += found
        oof.update({(scaling, c["C"]): p for c, p in zip(found, probs)})
    held_all = np.concatenate([held for _, held in folds])
    winner = _linear_winner(candidates)
    if hidden_probs is None:
        notes.append(f"no hidden-layer head was tried: a class has fewer than "
                     f"{HIDDEN_MIN_PER_CLASS} rows outside the test split")
    else:
        used = folds[:HIDDEN_FOLDS]
        held = np.concatenate([h for _, h in used])
        at = np.isin(held_all, held)
        linear_there = _scores(oof[(winner["scaling"], winner["C"])][at],
                               labels[held_all[at]])
        for l2 in HIDDEN_L2:
            try:
                probs = np.concatenate([hidden_probs(train, h, l2, i)
                                        for i, (train, h) in enumerate(used)])
            except DataError as exc:
                notes.append(f"the hidden-layer head was not tried: {exc}")
                break
            accuracy, loss = _scores(probs, labels[held])
            hidden = {"form": "hidden", "scaling": "standardize", "l2": l2,
                      "accuracy": accuracy, "log_loss": loss, "n_rows": len(held),
                      "folds": len(used), "linear_accuracy_here": linear_there[0]}
            candidates.append(hidden)
            if accuracy > linear_there[0] and \
                    (winner["form"] == "linear" or _rank(hidden) < _rank(winner)):
                winner = hidden
    return HeadChoice(candidates, winner, k, len(held_all), folds, notes)


def _linear_winner(candidates: list) -> dict:
    """The best standardised head, unless the best L2-normalised one beats it on accuracy and
    log loss both: on a few dozen rows the two scalings trade places from fold to fold, and
    standardised inputs are the linear probe's usual recipe."""
    best = {scaling: min((c for c in candidates if c["scaling"] == scaling), key=_rank)
            for scaling in linear.SCALINGS}
    other = best["l2_normalize"]
    if other["accuracy"] > best["standardize"]["accuracy"] and \
            other["log_loss"] < best["standardize"]["log_loss"]:
        return other
    return best["standardize"]


def _linear_path(x_of, labels, folds, n_classes, scaling, config, with_views, class_weight):
    """The C path of one scaling over every fold: (candidates, out-of-fold probabilities)."""
    standardize, l2_normalize = linear.SCALINGS[scaling]
    states = []
    for train, held in folds:
        fit = with_views(train)
        x = x_of(fit)
        stats = linear.scaling_stats(x, standardize)
        y = labels[fit]
        weights = linear.row_weights(y, n_classes, class_weight)
        # Each fold's path is solved in its training rows' row space: exact, and cheaper
        # by features / rows on small data.
        z, basis = linear.row_space(linear.scale(x, stats, l2_normalize, config.spatial))
        z_held = linear.scale(x_of(held), stats, l2_normalize, config.spatial)
        states.append([z, y, weights, z_held if basis is None else z_held @ basis, None])
    y_held = np.concatenate([labels[held] for _, held in folds])
    found, probs_of = [], []
    best, since = (-math.inf, math.inf), 0
    for C in linear.C_GRID:
        parts = []
        for state in states:
            z, y, weights, z_held, start = state
            state[4] = linear.solve(z, y, n_classes, C, weights, start=start,
                                    tolerance=linear.SWEEP_TOLERANCE)
            parts.append(linear.predict(z_held, *state[4]))
        probs = np.concatenate(parts)
        accuracy, loss = _scores(probs, y_held)
        found.append({"form": "linear", "scaling": scaling, "C": C, "accuracy": accuracy,
                      "log_loss": loss, "n_rows": len(y_held), "folds": len(folds)})
        probs_of.append(probs)
        better = accuracy > best[0] or loss < best[1]
        best = (max(best[0], accuracy), min(best[1], loss))
        since = 0 if better else since + 1
        if since >= PATH_PATIENCE:
            break
    return found, probs_of
