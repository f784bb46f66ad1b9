"""fit-head's run folder: written whole in a scratch folder, then published under a new name.

It holds the head (`head.keras`), `run.json` (store, key, provenance, classes, digests and the
head's choice), `config.toml` (the options of the head that was trained: given again with
`--config`, they train that head without the choice), curves, metrics, confusion matrix, the
misclassified samples and the per-sample probabilities of every held-out split
(`predictions_<split>.csv`), which `predict` and the exported model must reproduce.

Usage:
    run_dir = write_run(store, fitted, out_dir, echo)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.config import write_toml
from pipeline.errors import OutputError
from pipeline.evaluation import curves
from pipeline.fit import calibration, reports
from pipeline.outputs import Scratch, publish_new_folder, run_digests, write_json, write_marker


@dataclass
class FittedHead:
    """Everything a fit-head run folder records."""

    head_config: object  # the HeadConfig of the head trained (head options all set)
    model: object
    history: dict
    best_epoch: int | None  # None: solved exactly, no epochs
    split: object  # evaluation.splits.Split
    results: dict  # held-out split -> (ids, labels, accuracy, probs), calibrated
    n_calibration: int
    cv: tuple  # (report, table) of --cv, or (None, None)
    streamed: bool
    seconds: float
    output_reason: str
    data_checks: dict
    calibrated: dict  # calibration.calibrate's report
    raw_shown: np.ndarray | None  # the reliability diagram split's probabilities before T
    curve: list | None
    head: dict  # how the head came about: chosen (candidates, scores) or given; its solver
    decisions: object = None  # evaluation.decisions: the review applied, or None


def write_run(store, fitted: FittedHead, out_dir, echo) -> Path:
    """Writes the run folder in a scratch folder under `out`, then renames it to a name no
    other folder has: no half runs, and two runs finishing in one second both stay. When
    writing fails (a full disk), the trained head is saved elsewhere and the error says where.
    """
    out = Path(out_dir)
    try:
        with Scratch(out, "fit-head") as scratch:
            tmp = scratch / "run"
            tmp.mkdir()
            _write_run_files(tmp, store, fitted)
            return publish_new_folder(tmp, out, _run_dir_name(store.path, "head"))
    except Exception as exc:
        rescued = _rescue_head(fitted.model, store, out)
        kept = (f"the trained head was saved to {rescued}, with the run's run.json beside it"
                if rescued else "the trained head could not be saved anywhere")
        if isinstance(exc, (OSError, OutputError)):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OutputError(f"could not write the run folder in {out} ({reason}); {kept}. "
                              "Free space there, or pass --out with another folder, and run "
                              "fit-head again.") from None
        echo(f"error while writing the run folder: {kept}")
        raise


def _run_dir_name(store_path: Path, kind: str) -> str:
    return f"{store_path.stem}-{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _rescue_head(model, store, out: Path) -> Path | None:
    """Saves the trained head (and a run.json predict can use) where it can still be written:
    the system's temporary folder, else beside `out`. None when neither takes it."""
    for parent in (Path(tempfile.gettempdir()), out.parent):
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"featcache-rescued-{store.path.stem}-",
                                           dir=parent))
            model.save(folder / "head.keras")
            write_json(folder / "run.json", {
                "kind": "keras_head", "store": str(store.path.resolve()),
                "store_key": store.key, "provenance": store.provenance,
                "class_names": list(store.class_names), "rescued": True,
                "feature_shape": list(store.feature_shape),
                **run_digests(folder, ["head.keras"], store.class_names)})
            return folder / "head.keras"
        except Exception:  # this place is full or read-only too: try the next one
            continue
    return None


def shown_split(results: dict) -> str | None:
    """The held-out split the confusion matrix and the reliability diagram show."""
    return "test" if "test" in results else "val" if "val" in results else None


def _write_run_files(tmp, store, fitted: FittedHead) -> None:
    names = store.class_names
    config, split, results = fitted.head_config, fitted.split, fitted.results
    fitted.model.save(tmp / "head.keras")
    write_toml(tmp / "config.toml", "fit_head", {**config.as_dict(), "store": str(store.path)})
    write_json(tmp / "provenance.json", store.provenance)
    reports.write_history(tmp, fitted.history, fitted.best_epoch,
                          f"{store.path.stem}: head {list(config.hidden_units)} "
                          f"({fitted.output_reason})")
    metrics = {}
    # The group column of the per-row CSVs, where the groups join rows (never empty there).
    groups = store.row_index.group if store.row_index.has_groups else None
    group_of = {name: groups[np.sort(rows)] for name, rows in (("val", split.val),
                                                               ("test", split.test))
                } if groups is not None else None
    for name, (ids, y, _, probs) in results.items():
        scores = reports.classification_metrics(y, probs, names)
        metrics.update({f"{name}_accuracy": scores["accuracy"],
                        f"{name}_balanced_accuracy": scores["balanced_accuracy"],
                        f"{name}_log_loss": scores["log_loss"]})
        metrics.setdefault("per_split", {})[name] = scores
        reports.write_predictions(tmp / f"predictions_{name}.csv", ids, y, probs, names,
                                  groups=None if group_of is None else group_of[name])
    shown = shown_split(results)
    if shown:
        reports.write_confusion_matrix(tmp, metrics["per_split"][shown]["confusion_matrix"],
                                       names, shown)
    metrics["n_misclassified"] = reports.write_misclassified(
        tmp / "misclassified.csv", [(n, *results[n][:2], results[n][3]) for n in results],
        names, groups=group_of)
    data_checks = fitted.data_checks
    metrics.update({
        "confusion_matrix_split": shown,
        "split": {"how": split.how, "n_train": len(split.train) - fitted.n_calibration,
                  "n_val": len(split.val), "n_test": len(split.test),
                  "test_split": "store" if "test" in store.splits
                  else (f"held out {config.test_fraction:.0%} of the store, seed "
                        f"{config.seed}" if len(split.test) else "none"),
                  "n_calibration": fitted.n_calibration,
                  "val_trains": "val" not in results and bool(len(split.val)),
                  "groups_in_more_than_one_split":
                      data_checks["groups_in_more_than_one_split"],
                  "rows_without_group": data_checks["rows_without_group"],
                  "groups_from": store.groups_from},
        "data_checks": data_checks,
        "output": fitted.output_reason,
        "head": fitted.head,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history.get("loss", [])) if fitted.best_epoch else 0,
        "class_weight": config.class_weight,
        "training": "streamed from the store" if fitted.streamed else "in memory",
        "train_seconds": round(fitted.seconds, 2),
    })
    cv_report, cv_table = fitted.cv
    if cv_report:
        metrics["cross_validation"] = cv_report
        rows = cv_table["rows"]
        reports.write_cv_folds(tmp / "cv_folds.csv", store.column("ids")[rows],
                               None if groups is None else groups[rows],
                               store.column("labels")[rows], cv_table["roles"],
                               cv_table["scored_in"], cv_table["probs"], names)
    if shown:  # T and its reliability diagram, on the held-out split shown
        _, shown_labels, _, shown_probs = results[shown]
        metrics["calibration"] = calibration.write_calibration(
            tmp, fitted.calibrated, shown_labels, fitted.raw_shown, shown_probs, shown)
    else:
        metrics["calibration"] = fitted.calibrated
    if fitted.curve:
        curves.write_learning_curve(tmp, fitted.curve, f"{store.path.stem}: head")
        metrics["learning_curve"] = fitted.curve
    metrics["score"] = honest_score(metrics, results, fitted.head)
    # The review's file (its digest) and the rows each action took.
    decided = {"decisions": fitted.decisions.record()} if fitted.decisions is not None else {}
    metrics.update(decided)
    write_json(tmp / "metrics.json", metrics)
    write_json(tmp / "run.json", {
        "kind": "keras_head", "store": str(store.path.resolve()), "store_key": store.key,
        "provenance": store.provenance, "class_names": list(names),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "feature_shape": list(store.feature_shape), "head": fitted.head, **decided,
        **run_digests(tmp, ["head.keras"], names),  # checked by predict and export
    })
    write_marker(tmp, "fit-head", store=str(store.path.resolve()))


def honest_score(metrics: dict, results: dict, head: dict) -> dict:
    """The score to quote: the test split's, else the validation split's, else (on data too
    small for either) the chosen head's cross-validation accuracy and the rows it rests on."""
    for name in ("test", "val"):
        if name in results:
            return {"split": name, "accuracy": metrics[f"{name}_accuracy"],
                    "n": int(len(results[name][1]))}
    choice = head.get("choice") or {}
    winner = choice.get("winner") or {}
    return {"split": "cross-validation", "accuracy": winner.get("accuracy"),
            "n": choice.get("n_rows", 0)}
