"""Stage two: train a dense Keras head on a feature store and write a run folder.

The run folder holds the head (`head.keras`), `run.json` (store, key, provenance, classes), the
resolved config, curves, metrics, confusion matrix, the misclassified samples and the per-sample
probabilities of every evaluated split (`predictions_<split>.csv`), which `predict` and the
exported model must reproduce.

The rows: an untouched test share (the honest score), validation rows that choose the epoch
and the learning-rate decay, a calibration share of the training rows that fits the
temperature, and the training rows proper.

Usage:
    from pipeline.fit.run import fit_head
    run_dir = fit_head("cache/flowers5-mobilenet-pooled-1a2b3c4d5e.h5", {"epochs": 50})
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.config import write_toml
from pipeline.errors import DataError, OutputError
from pipeline.outputs import (Scratch, check_writable_folder, publish_new_folder, run_digests,
                              write_json, write_marker)
from pipeline.store.feature_store import open_store
from pipeline.evaluation import checks
from pipeline.fit.heads import resolve_output
from pipeline.fit.options import HeadConfig
from pipeline.evaluation import curves
from pipeline.evaluation.splits import holdout, make_split
from pipeline.fit.probe import compare_with_linear_probe
from pipeline.fit import calibration, reports
from pipeline.fit.cross_validation import cross_validate
from pipeline.fit.training import HeadTrainer, probabilities, should_stream
from pipeline.evaluation.decisions import apply_decisions
from pipeline.evaluation.exclusions import adopt_audit_groups, audited_split


def fit_head(store_path, options=None, out_dir=None, echo=print) -> Path:
    """Trains a head on the store's vectors and writes its run folder.

    Args:
        store_path: feature store made by `extract` (or `feature_store.write_store`).
        options: a `HeadConfig`, or a mapping of any fit-head options (see
            `FIT_HEAD_OPTIONS`; missing keys take their defaults; a `config` key names a TOML
            file whose [fit_head] table is read first, and error messages then name its keys).
        out_dir: parent of the run folder; overrides the `out` option.
        echo: where progress lines go.

    Returns:
        The run folder's path.

    Raises:
        ConfigError: a wrong option, e.g. a 2-unit softmax with binary cross-entropy.
        DataError: too few or unlabelled samples for the requested splits.
        StoreError: the store is missing or unreadable.
        OutputError: `--out` cannot be a writable folder (checked before training), or the run
            folder could not be written (the message names where the trained head was kept).
    """
    from pipeline.fit import head_data  # lazy: loads Keras

    config = HeadConfig.from_mapping(options)
    config_file = config.config_file
    out_dir = check_writable_folder(out_dir or config.out, "--out")  # before any training
    with open_store(store_path) as store:
        n_classes = len(store.class_names)
        output = resolve_output(n_classes, config.output, config.loss, config_file)  # refuse early
        if config.groups_from_audit:
            adopt_audit_groups(store, echo)
        decisions = apply_decisions(store, config.decisions, echo)  # relabels before the check
        labels = store.column("labels")
        if (labels < 0).any():
            raise DataError(f"store {store.path.name} has {int((labels < 0).sum())} unlabelled "
                            "row(s); fit-head needs a label on every row (extract a labelled "
                            "folder or manifest).")
        split = make_split(store, config.val_fraction, config.seed, config.test_fraction,
                           config=config_file)
        split = audited_split(store, split, config.exclude_leaks, echo, decisions)
        fit_rows, cal_rows, cal_skipped = _calibration_rows(store, split.train, config)
        # A store made with --views: the views of the training files (never of a validation,
        # calibration or test file) train beside their plain rows.
        index = store.row_index
        train_rows = index.with_views(fit_rows, config.train_views)
        view_pool = np.concatenate([split.train, split.val]) if config.cv else fit_rows
        needed = np.concatenate([split.train, split.val, split.test,
                                 index.views_of(view_pool, config.train_views)])
        streamed = should_stream(store, len(needed), config)
        echo(f"{store.path.name}: {len(store)} vectors {store.feature_shape}, "
             f"{n_classes} classes; train {len(fit_rows)}, calibration {len(cal_rows)}, val "
             f"{len(split.val)}, test {len(split.test)} ({split.how}); {output.reason}; "
             f"{_views_line(len(train_rows) - len(fit_rows))}; "
             f"{'streamed from the store' if streamed else 'in memory'}")
        source = None if streamed else head_data.InMemoryVectors(store, needed)
        data_checks = _check_data(store, source, split, echo)
        data_checks["warnings"] += _echo_all(list(split.warnings), echo)
        started = time.perf_counter()
        cv_report, cv_table = (cross_validate(store, source, split, config, echo)
                               if config.cv else (None, None))
        if cv_report:
            data_checks["warnings"] += _echo_all(
                checks.tiny_data_warnings(fold_scores=[f["val_accuracy"]
                                                       for f in cv_report["folds"]]), echo)
        trainer = HeadTrainer(store, source, config, train_rows, echo)
        model, history, best_epoch = trainer.train(train_rows, split.val)
        seconds = time.perf_counter() - started
        evaluated = [(name, rows) for name, rows in (("val", split.val), ("test", split.test))
                     if len(rows)]
        results = {name: probabilities(model, store, source, rows) for name, rows in evaluated}
        # T fitted on the calibration rows (which chose nothing else) and folded into the
        # output layer: head.keras, the recorded probabilities, predict and export agree.
        calibrated = calibration.calibrate(
            model, probabilities(model, store, source, cal_rows) if len(cal_rows) else None,
            results, cal_skipped)
        if calibrated.get("skipped") and config.calibration_fraction:
            data_checks["warnings"] += _echo_all([f"warning: {calibrated['skipped']}"], echo)
        raw_val = results["val"][3]
        results = {name: probabilities(model, store, source, rows) for name, rows in evaluated}
        final_weights = model.get_weights()
        curve = curves.learning_curve(
            lambda rows: probabilities(trainer.train(index.with_views(rows, config.train_views),
                                                     split.val, progress=False)[0],
                                       store, source, split.val)[2],
            fit_rows, labels, results["val"][2], config.seed) \
            if config.learning_curve else None
        model.set_weights(final_weights)  # the curve's heads retrained the same compiled model
        honest = "test" if "test" in results else "val"
        data_checks["linear_probe"] = compare_with_linear_probe(
            store, source, train_rows, results[honest], honest, echo) \
            if config.linear_probe else None
        data_checks["train_view_rows"] = int(len(train_rows) - len(fit_rows))
        run_dir = _write_run(store, config, model, history, best_epoch, split, results,
                             (cv_report, cv_table), streamed, seconds, output.reason,
                             data_checks, out_dir, (calibrated, raw_val, curve, len(cal_rows)),
                             echo, decisions)
    epochs = f"epoch {best_epoch} of {len(history.get('loss', []))} kept"
    val_line = (f"val_accuracy {results['val'][2]:.4f} (the {len(split.val)} rows that chose "
                "the epoch: optimistic)")
    cv_line = (f"cv accuracy {cv_report['val_accuracy_mean']:.4f} +/- "
               f"{cv_report['val_accuracy_std']:.4f} (held-out fold rows that chose nothing)"
               if cv_report else "")
    test_line = (f"test_accuracy {results['test'][2]:.4f} (the {len(split.test)} untouched "
                 "test rows: the honest score)" if "test" in results else "")
    echo(", ".join(part for part in (test_line, val_line, cv_line) if part) + f"; {epochs}")
    return run_dir


def _calibration_rows(store, train_rows, config: HeadConfig):
    """(rows that train, rows that fit T, why calibration is skipped or None)."""
    empty = np.array([], dtype=np.int64)
    if not config.calibration_fraction:
        return train_rows, empty, "calibration is off (calibration_fraction = 0)"
    try:
        fit_rows, cal_rows = holdout(train_rows, store.column("labels"), store.row_index.group,
                                     config.calibration_fraction, config.seed + 1,
                                     knob="calibration_fraction", config=config.config_file,
                                     class_names=store.class_names)
    except DataError as exc:
        return train_rows, empty, ("probabilities are not calibrated: no calibration share "
                                   f"could be held out of the training rows ({exc})")
    return fit_rows, cal_rows, None


def _views_line(n_view_rows: int) -> str:
    if not n_view_rows:
        return "plain rows only"
    return f"+{n_view_rows} augmented view rows of the training files"


def _echo_all(lines: list[str], echo) -> list[str]:
    for line in lines:
        echo(line)
    return lines


def _check_data(store, source, split, echo) -> dict:
    """Says out loud what makes the scores hard to trust; returns the facts for metrics.json."""
    index = store.row_index
    found = {"rows_without_group": index.n_without_group, "warnings": []}
    if found["rows_without_group"]:
        echo(f"{found['rows_without_group']} of {len(store)} rows have no group: each counts "
             "as a group of its own in the splits")
    leaked = checks.groups_on_both_sides(index.group, split.train, split.val, split.test)
    found["groups_in_more_than_one_split"] = len(leaked)
    if leaked:
        found["warnings"] += _echo_all([checks.leak_warning(leaked, "the store's own splits")],
                                       echo)
    found["warnings"] += _echo_all(checks.tiny_data_warnings(n_val=len(split.val)), echo)
    if len(split.val) >= checks.FEW_VALIDATION_ROWS:  # fewer rows: warned about just above
        found["warnings"] += _echo_all(checks.volatile_groups_warning(index.group, split.val),
                                       echo)
    rows = np.concatenate([split.train, split.val, split.test])
    digests = np.zeros(len(store), dtype=np.int64)
    digests[np.sort(rows)] = checks.row_digests(
        [source.get(np.sort(rows))] if source is not None else
        (x for x, _ in store.iter_batches(rows=np.sort(rows), batch_size=4096)))
    for name, other in (("validation", split.val), ("test", split.test)):
        n = checks.copied_rows(digests, split.train, other) if len(other) else 0
        found[f"{name}_rows_copied_from_train"] = n
        if n:
            found["warnings"] += _echo_all([checks.copies_warning(n, "training", name)], echo)
    return found


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


def _write_run(store, config, model, history, best_epoch, split, results, cv, streamed,
               seconds, output_reason, data_checks, out_dir, extras, echo,
               decisions=None) -> Path:
    """Writes the run folder in a scratch folder under `out`, then renames it to a name no
    other folder has: no half runs, and two runs finishing in one second both stay. When
    writing fails (a full disk), the trained head is saved elsewhere and the error says where.
    """
    out = Path(out_dir)
    try:
        with Scratch(out, "fit-head") as scratch:
            tmp = scratch / "run"
            tmp.mkdir()
            _write_run_files(tmp, store, config, model, history, best_epoch, split, results, cv,
                             streamed, seconds, output_reason, data_checks, extras, decisions)
            return publish_new_folder(tmp, out, _run_dir_name(store.path, "head"))
    except Exception as exc:
        rescued = _rescue_head(model, store, out)
        kept = (f"the trained head was saved to {rescued}, with the run's run.json beside it"
                if rescued else "the trained head could not be saved anywhere")
        if isinstance(exc, (OSError, OutputError)):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OutputError(f"could not write the run folder in {out} ({reason}); {kept}. "
                              "Free space there, or pass --out with another folder, and run "
                              "fit-head again.") from None
        echo(f"error while writing the run folder: {kept}")
        raise


def _write_run_files(tmp, store, config, model, history, best_epoch, split, results, cv,
                     streamed, seconds, output_reason, data_checks, extras,
                     decisions=None) -> None:
    names = store.class_names
    model.save(tmp / "head.keras")
    write_toml(tmp / "config.toml", "fit_head",
               {**config.as_dict(), "store": str(store.path)})
    write_json(tmp / "provenance.json", store.provenance)
    reports.write_history(tmp, history, best_epoch,
                          f"{store.path.stem}: head {list(config.hidden_units)} "
                          f"({output_reason})")
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
    shown = "test" if "test" in results else "val"
    reports.write_confusion_matrix(tmp, metrics["per_split"][shown]["confusion_matrix"],
                                   names, shown)
    n_wrong = reports.write_misclassified(
        tmp / "misclassified.csv", [(n, *results[n][:2], results[n][3]) for n in results],
        names, groups=group_of)
    metrics.update({
        "confusion_matrix_split": shown,
        "n_misclassified": n_wrong,
        "split": {"how": split.how, "n_train": len(split.train) - extras[3], "n_val": len(split.val),
                  "n_test": len(split.test), "test_split": "store" if "test" in store.splits
                  else (f"held out {config.test_fraction:.0%} of the store, seed "
                        f"{config.seed}" if len(split.test) else "none"),
                  "n_calibration": extras[3],
                  "groups_in_more_than_one_split":
                      data_checks["groups_in_more_than_one_split"],
                  "rows_without_group": data_checks["rows_without_group"],
                  "groups_from": store.groups_from},
        "data_checks": data_checks,
        "output": output_reason,
        "best_epoch": best_epoch,
        "epochs_run": len(history["loss"]),
        "class_weight": config.class_weight,
        "training": "streamed from the store" if streamed else "in memory",
        "train_seconds": round(seconds, 2),
    })
    cv_report, cv_table = cv
    if cv_report:
        metrics["cross_validation"] = cv_report
        rows = cv_table["rows"]
        reports.write_cv_folds(tmp / "cv_folds.csv", store.column("ids")[rows],
                               None if groups is None else groups[rows],
                               store.column("labels")[rows], cv_table["roles"],
                               cv_table["scored_in"], cv_table["probs"], names)

    calibrated, raw_val, curve, _ = extras  # T + reliability diagram; learning curve
    _, val_labels, _, val_probs = results["val"]
    metrics["calibration"] = calibration.write_calibration(tmp, calibrated, val_labels,
                                                           raw_val, val_probs)
    if curve:
        curves.write_learning_curve(tmp, curve, f"{store.path.stem}: head")
        metrics["learning_curve"] = curve
    honest = "test" if "test" in results else "val"
    metrics["score"] = {"split": honest, "accuracy": metrics[f"{honest}_accuracy"],
                        "n": int(len(results[honest][1]))}
    decided = {"decisions": decisions.record()} if decisions is not None else {}
    metrics.update(decided)  # the review's file (its digest) and the rows each action took
    write_json(tmp / "metrics.json", metrics)
    write_json(tmp / "run.json", {
        "kind": "keras_head", "store": str(store.path.resolve()), "store_key": store.key,
        "provenance": store.provenance, "class_names": list(names),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "feature_shape": list(store.feature_shape), **decided,
        **run_digests(tmp, ["head.keras"], names),  # checked by predict and export
    })
    write_marker(tmp, "fit-head", store=str(store.path.resolve()))

