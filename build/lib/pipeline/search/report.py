"""What a grid-search run folder shows: the leaderboard (CSV, table, plot), cv_results, folds.

Usage:
    ranked = rank(candidates)
    write_tables(run_dir, ranked, n_folds=5, scoring="accuracy")
    plot_leaderboard(run_dir / "leaderboard.png", ranked, "accuracy")
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

LEADERBOARD_COLUMNS = ("rank", "model", "family", "params", "cv_mean", "cv_std", "fit_seconds",
                       "test_score", "preprocess", "status", "notes")


TIE_RULE = "ties in mean CV score: the candidate listed first in the grid ranks first"


def rank(candidates: list) -> list:
    """Finished candidates by mean CV score, then the rest.

    Ties rank by the grid's own order (`Candidate.index`: the entry listed first, then its
    first parameter combination), so the simpler candidate a grid lists first wins and the
    saved best model is the same on every run; fit times vary with the machine's load. The
    mean is rounded to 12 digits so that equal fold scores summed in another order still tie.
    """
    done = sorted((c for c in candidates if c.status == "done"),
                  key=lambda c: (-round(c.cv_mean, 12), c.index))
    return done + [c for c in candidates if c.status != "done"]


def _fmt(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _params(cand) -> str:
    return json.dumps(cand.params, sort_keys=True, default=str)


def write_folds(run_dir: Path, folds: list, test_rows: np.ndarray, how: str,
                table: dict | None = None) -> None:
    """folds.json (the store rows of each fold and of the test split, so anyone can audit them)
    and, given the store's columns in `table` (ids, labels, names, groups or None), folds.csv:
    one row per store row with its group and its role in each fold (train / val / test)."""
    doc = {"test_how": how, "test": np.asarray(test_rows).tolist(),
           "folds": [{"train": np.asarray(t).tolist(), "val": np.asarray(v).tolist()}
                     for t, v in folds]}
    (run_dir / "folds.json").write_text(json.dumps(doc), encoding="utf-8")
    if table is None:
        return
    roles = np.full((len(table["ids"]), len(folds)), "", dtype=object)
    roles[np.asarray(test_rows, dtype=np.int64), :] = "test"
    for k, (train, val) in enumerate(folds):
        roles[train, k], roles[val, k] = "train", "val"
    groups = table["groups"]
    with (run_dir / "folds.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id"] + (["group"] if groups is not None else []) + ["true_class"]
                        + [f"fold{k + 1}" for k in range(len(folds))])
        for row in np.flatnonzero((roles != "").any(axis=1)):
            label = table["labels"][row]
            writer.writerow([table["ids"][row]] + ([groups[row]] if groups is not None else [])
                            + [table["names"][label] if label >= 0 else ""] + list(roles[row]))


def write_tables(run_dir: Path, ranked: list, n_folds: int, scoring: str) -> None:
    """leaderboard.csv (one row per candidate) and cv_results.csv (one column per fold)."""
    with (run_dir / "leaderboard.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(LEADERBOARD_COLUMNS)
        for i, c in enumerate(ranked, 1):
            writer.writerow([i if c.status == "done" else "", c.entry.name, c.entry.family,
                             _params(c), _fmt(c.cv_mean), _fmt(c.cv_std), _fmt(c.fit_seconds, 3),
                             _fmt(c.test_score), "+".join(c.entry.preprocess), c.status,
                             " ".join(sorted(c.notes))])
    param_names = sorted({k for c in ranked for k in c.params})
    header = (["model", "family", "params"] + [f"param_{p}" for p in param_names]
              + [f"split{i}_test_{scoring}" for i in range(n_folds)]
              + ["mean_test_score", "std_test_score", "rank_test_score", "mean_fit_time",
                 "std_fit_time", "mean_score_time", "status"])
    with (run_dir / "cv_results.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, c in enumerate(ranked, 1):
            scores = list(c.scores) + [None] * (n_folds - len(c.scores))
            writer.writerow([c.entry.name, c.entry.family, _params(c)]
                            + [json.dumps(c.params[p], default=str) if p in c.params else ""
                               for p in param_names]
                            + [_fmt(s) for s in scores]
                            + [_fmt(c.cv_mean), _fmt(c.cv_std), i if c.status == "done" else "",
                               _fmt(c.fit_seconds, 3),
                               _fmt(float(np.std(c.fit_times)) if c.fit_times else None, 3),
                               _fmt(float(np.mean(c.score_times)) if c.score_times else None, 3),
                               c.status])


def param_items(params: dict) -> list[str]:
    """`name=value` per parameter, whole: the classifier's own names without the `clf__` that
    every one of them shares; a preprocessing step's keep their step (`pca__n_components`)."""
    return [f"{k.removeprefix('clf__')}={json.dumps(v, default=str) if isinstance(v, list) else v}"
            for k, v in sorted(params.items())]


def wrap_items(items: list[str], width: int) -> list[str]:
    """Items joined by ", " into lines of at most `width` characters; an item is never cut
    (one longer than `width` gets a line of its own)."""
    lines = [""]
    for item in items:
        joined = f"{lines[-1]}, {item}" if lines[-1] else item
        if len(joined) <= width or not lines[-1]:
            lines[-1] = joined
        else:
            lines[-1] += ","
            lines.append(item)
    return lines


def format_table(ranked: list, scoring: str, limit: int = 25, width: int = 48) -> str:
    """The leaderboard as a fixed-width text table for the terminal; long parameter lists wrap
    onto continuation lines instead of being cut."""
    rows = [("#", "model", "params", f"cv {scoring}", "fit s", "test")]
    for i, c in enumerate(ranked[:limit], 1):
        params = wrap_items(param_items(c.params), width)
        cv = f"{c.cv_mean:.4f} +/- {c.cv_std:.4f}" if c.status == "done" else c.status[:40]
        rows.append((str(i) if c.status == "done" else "-", c.entry.name,
                     params[0], cv, _fmt(c.fit_seconds, 2), _fmt(c.test_score)))
        rows += [("", "", more, "", "", "") for more in params[1:]]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(ranked) > limit:
        lines.append(f"... {len(ranked) - limit} more rows in leaderboard.csv")
    lines.append(f"({TIE_RULE})")
    return "\n".join(lines)


def leaderboard_labels(best: list) -> list[str]:
    """Plot labels: the model, its mean CV score, and its parameters wrapped, never cut."""
    return ["\n".join([f"{c.entry.name}  {c.cv_mean:.3f}"]
                      + wrap_items(param_items(c.params), 40)) for c in best]


def plot_leaderboard(path: Path, ranked: list, scoring: str) -> None:
    """One bar per model (its best candidate: mean +/- std over folds, with each fold's
    score as a dot and the test score as a diamond) so the spread is visible next to the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {}
    for c in ranked:
        if c.status == "done" and c.entry.name not in best:
            best[c.entry.name] = c
    names = list(best)[::-1]  # matplotlib draws from the bottom: best model on top
    labels = leaderboard_labels([best[n] for n in names])
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    fig, ax = plt.subplots(figsize=(9.5, (0.3 + 0.25 * lines) * len(names) + 1.6))
    for y, name in enumerate(names):
        c = best[name]
        ax.barh(y, c.cv_mean, xerr=c.cv_std, color="#8fb3d9", edgecolor="#3b6a99",
                capsize=4, height=0.6)
        ax.scatter(c.scores, [y] * len(c.scores), s=12, color="#1f3b57", zorder=3,
                   label="fold score" if y == 0 else None)
        if c.test_score is not None:
            ax.scatter([c.test_score], [y], marker="D", s=40, color="#d9534f", zorder=4,
                       label="test score")
    ax.set_yticks(range(len(names)), labels, fontsize=8)  # the mean, readable at a glance
    lows = [min(best[n].scores) for n in names] + [best[n].test_score or 1 for n in names]
    ax.set_xlim(max(0.0, min(lows) - 0.05), 1.0)
    ax.set_xlabel(f"cross-validated {scoring} (best candidate per model; bar = mean, "
                  "whisker = std)")
    ax.set_title("grid-search leaderboard")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
