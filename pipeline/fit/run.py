"""Stage two: train a dense Keras head on a feature store and write a run folder.

The run folder holds the head (`head.keras`), `run.json` (store, key, provenance, classes), the
resolved config, curves, metrics, confusion matrix, the misclassified samples and the per-sample
probabilities of every evaluated split (`predictions_<split>.csv`), which `predict` and the
exported model must reproduce.

Usage:
    from pipeline.fit.run import fit_head
    run_dir = fit_head("cache/flowers5-mobilenet-pooled-1a2b3c4d5e.h5", {"epochs": 50})
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.fit.options import FIT_HEAD_OPTIONS
from pipeline.config import with_defaults, write_toml
from pipeline.errors import ConfigError, DataError
from pipeline.store.feature_store import open_store
from pipeline.fit.heads import HeadConfig, balanced_class_weight, resolve_output
from pipeline.fit.splits import cv_splitter, make_split

HEAD_KEYS = ("hidden_units", "standardize", "dropout", "l2", "batch_norm", "activation", "spatial", "output",
             "loss", "optimizer", "learning_rate", "batch_size", "epochs", "patience",
             "class_weight", "seed")


def resolve_fit_options(options: dict | None) -> dict:
    """Defaults of every fit-head option, overridden by `options` (unknown keys refused)."""
    resolved = with_defaults(options, FIT_HEAD_OPTIONS, "fit-head")
    if resolved["epochs"] < 1 or resolved["batch_size"] < 1 or resolved["patience"] < 1:
        raise ConfigError("epochs, batch_size and patience must be at least 1; received: "
                          f"epochs={resolved['epochs']}, batch_size={resolved['batch_size']}, "
                          f"patience={resolved['patience']}")
    if resolved["cv"] == 1 or resolved["cv"] < 0:
        raise ConfigError(f"cv must be 0 (off) or at least 2 folds; received: {resolved['cv']}")
    return resolved


def fit_head(store_path, options: dict | None = None, out_dir=None, echo=print) -> Path:
    """Trains a head on the store's vectors and writes its run folder.

    Args:
        store_path: feature store made by `extract` (or `feature_store.write_store`).
        options: fit-head options (see `FIT_HEAD_OPTIONS`); missing keys take their defaults.
        out_dir: parent of the run folder; overrides `options["out"]`.
        echo: where progress lines go.

    Returns:
        The run folder's path.

    Raises:
        ConfigError: a wrong option, e.g. a 2-unit softmax with binary cross-entropy.
        DataError: too few or unlabelled samples for the requested splits.
        StoreError: the store is missing or unreadable.
    """
    opts = resolve_fit_options(options)
    config = HeadConfig.from_dict({k: opts[k] for k in HEAD_KEYS})
    with open_store(store_path) as store:
        n_classes = len(store.class_names)
        output = resolve_output(n_classes, config.output, config.loss)  # refuse before any work
        labels = store.column("labels")
        if (labels < 0).any():
            raise DataError(f"store {store.path.name} has {int((labels < 0).sum())} unlabelled "
                            "row(s); fit-head needs a label on every row (extract a labelled "
                            "folder or manifest).")
        split = make_split(store, opts["val_fraction"], opts["seed"], opts["test_fraction"])
        from pipeline.audit.leaks import audited_split

        split = audited_split(store, split, opts["exclude_leaks"], echo)
        overlap = _groups_on_both_sides(store, split)
        if overlap:
            echo(f"warning: {overlap} group(s) sit in more than one of the store's own splits; "
                 "validation scores will be optimistic")
        needed = np.concatenate([split.train, split.val, split.test])
        streamed = _should_stream(store, len(needed), opts)
        echo(f"{store.path.name}: {len(store)} vectors {store.feature_shape}, "
             f"{n_classes} classes; train {len(split.train)}, val {len(split.val)}, test "
             f"{len(split.test)} ({split.how}); {output.reason}; "
             f"{'streamed from the store' if streamed else 'in memory'}")
        from pipeline.fit import head_data

        source = None if streamed else head_data.InMemoryVectors(store, needed)
        started = time.perf_counter()
        cv_report = _cross_validate(store, source, split, config, opts, echo) if opts["cv"] else None
        model, history, best_epoch = _train(store, source, split.train, split.val, config,
                                            opts, echo)
        seconds = time.perf_counter() - started
        evaluated = [(name, rows) for name, rows in (("val", split.val), ("test", split.test))
                     if len(rows)]
        results = {name: _probabilities(model, store, source, rows)
                   for name, rows in evaluated}
        from pipeline.fit import calibration

        # T fitted on val and folded into the output layer: head.keras, the recorded
        # probabilities, predict and export are calibrated alike; argmax (accuracy) unchanged.
        calibrated = calibration.calibrate(model, results)
        results = {name: _probabilities(model, store, source, rows) for name, rows in evaluated}
        curve = calibration.learning_curve(
            lambda rows: _probabilities(_train(store, source, rows, split.val, config,
                                               {**opts, "progress": False}, echo)[0],
                                        store, source, split.val)[2],
            split.train, store.column("labels"), results["val"][2], opts["seed"]) \
            if opts["learning_curve"] else None
        run_dir = _write_run(store, opts, config, model, history, best_epoch, split, results,
                             cv_report, streamed, seconds, output.reason, overlap, out_dir,
                             (calibrated, curve))
    echo(f"val_accuracy {results['val'][2]:.4f}"
         + (f", test_accuracy {results['test'][2]:.4f}" if "test" in results else "")
         + f" (best epoch {best_epoch} of {len(history.get('loss', []))})")
    return run_dir


def _groups_on_both_sides(store, split) -> int:
    if not store.has_groups:
        return 0
    groups = store.column("group")
    sides = [set(groups[rows].tolist()) - {""} for rows in (split.train, split.val, split.test)]
    return len((sides[0] & sides[1]) | (sides[0] & sides[2]) | (sides[1] & sides[2]))


def _should_stream(store, n_rows: int, opts: dict) -> bool:
    from pipeline.fit.head_data import vector_bytes

    if opts["stream"] != "auto":
        return opts["stream"] == "always"
    return vector_bytes(store, n_rows) > opts["memory_limit_mb"] * (1 << 20)


def _train(store, source, train_rows, val_rows, config: HeadConfig, opts: dict, echo,
           prefix: str = ""):
    """Builds a fresh head and fits it with early stopping; returns (model, history, best)."""
    import keras

    from pipeline.fit import head_data
    from pipeline.fit.heads import build_head, feature_moments

    stats = None
    if config.standardize:  # training rows only: validation statistics must not leak in
        stats = feature_moments(
            (x for x, _ in store.iter_batches(rows=np.sort(train_rows), batch_size=4096))
            if source is None else [source.get(train_rows)])
    model = build_head(store.feature_shape, len(store.class_names), config, stats)
    sigmoid = model.output.shape[-1] == 1
    labels = store.column("labels")
    weights = balanced_class_weight(labels[train_rows], len(store.class_names)) \
        if config.class_weight == "balanced" else None
    if source is None:
        train = head_data.StoreBatches(store, train_rows, config.batch_size, True, config.seed,
                                       sigmoid)
        val = head_data.StoreBatches(store, val_rows, 1024, False, sigmoid=sigmoid)
        fit_kw = {"x": train, "validation_data": val}
    else:
        fit_kw = {"x": source.get(train_rows),
                  "y": head_data.targets(labels[train_rows], sigmoid),
                  "validation_data": (source.get(val_rows),
                                      head_data.targets(labels[val_rows], sigmoid)),
                  "batch_size": config.batch_size, "shuffle": True}
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, min_lr=1e-6,
                                          patience=max(2, config.patience // 3)),
    ]
    if opts.get("progress", True):
        callbacks.append(_EpochLine(echo, config.epochs, prefix))
    history = model.fit(epochs=config.epochs, class_weight=weights, callbacks=callbacks,
                        verbose=0, **fit_kw).history
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    return model, history, best_epoch


def _probabilities(model, store, source, rows):
    """(ids, labels, accuracy, probs) of `rows`, probabilities as (n, K) float64."""
    from pipeline.fit import head_data
    from pipeline.fit.heads import predict_proba

    rows = np.sort(rows)
    if source is None:
        feed = head_data.StoreBatches(store, rows, 1024, False)
        raw = np.asarray(model.predict(feed, verbose=0), dtype=np.float64)  # one traced loop
        probs = np.concatenate([1.0 - raw, raw], axis=1) if raw.shape[1] == 1 else raw
    else:
        probs = predict_proba(model, source.get(rows))
    y = store.column("labels")[rows]
    return store.column("ids")[rows], y, float(np.mean(probs.argmax(1) == y)), probs


def _cross_validate(store, source, split, config, opts, echo) -> dict:
    """k-fold CV over train + val (never test), each fold with its own early stopping."""
    pool = np.sort(np.concatenate([split.train, split.val]))
    labels = store.column("labels")
    groups = store.column("group")[pool] if store.has_groups else None
    splitter = cv_splitter(labels[pool], groups, opts["cv"], opts["seed"])
    folds = []
    for i, (tr, va) in enumerate(splitter.split(np.zeros(len(pool)), labels[pool], groups)):
        model, history, best = _train(store, source, pool[tr], pool[va], config, opts, echo,
                                      prefix=f"fold {i + 1}/{opts['cv']} ")
        _, _, accuracy, _ = _probabilities(model, store, source, pool[va])
        folds.append({"fold": i + 1, "n_train": len(tr), "n_val": len(va), "best_epoch": best,
                      "val_loss": float(history["val_loss"][best - 1]), "val_accuracy": accuracy})
        echo(f"fold {i + 1}/{opts['cv']}: val_accuracy {accuracy:.4f}")
    accs = np.array([f["val_accuracy"] for f in folds])
    return {"k": opts["cv"], "grouped": groups is not None, "val_accuracy_mean": float(accs.mean()),
            "val_accuracy_std": float(accs.std()), "folds": folds}


class _EpochLine:
    """A Keras callback printing one compact line per epoch through `echo`."""

    def __new__(cls, echo, epochs, prefix):
        import keras

        class EpochLine(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                echo(f"{prefix}epoch {epoch + 1}/{epochs}  loss {logs.get('loss', 0):.4f}  "
                     f"acc {logs.get('accuracy', 0):.4f}  val_loss {logs.get('val_loss', 0):.4f}"
                     f"  val_acc {logs.get('val_accuracy', 0):.4f}  lr {lr:.2g}")

        return EpochLine()


def _run_dir_name(store_path: Path, out: Path, kind: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = out / f"{store_path.stem}-{kind}-{stamp}"
    candidate, n = base, 2
    while candidate.exists() or candidate.with_name(f".{candidate.name}.tmp").exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def _write_run(store, opts, config, model, history, best_epoch, split, results, cv_report,
               streamed, seconds, output_reason, overlap, out_dir, extras) -> Path:
    """Writes everything into a hidden temporary folder, then renames it: no half runs."""
    from pipeline.fit import reports

    out = Path(out_dir or opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    final = _run_dir_name(store.path, out, "head")
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.mkdir()
    try:
        names = store.class_names
        model.save(tmp / "head.keras")
        write_toml(tmp / "config.toml", "fit_head",
                   {k: v for k, v in opts.items() if k not in ("config",)})
        reports.write_json(tmp / "provenance.json", store.provenance)
        reports.write_history(tmp, history, best_epoch,
                              f"{store.path.stem}: head {list(config.hidden_units)} "
                              f"({output_reason})")
        metrics = {}
        for name, (ids, y, _, probs) in results.items():
            scores = reports.classification_metrics(y, probs, names)
            metrics.update({f"{name}_accuracy": scores["accuracy"],
                            f"{name}_balanced_accuracy": scores["balanced_accuracy"],
                            f"{name}_log_loss": scores["log_loss"]})
            metrics.setdefault("per_split", {})[name] = scores
            reports.write_predictions(tmp / f"predictions_{name}.csv", ids, y, probs, names)
        shown = "test" if "test" in results else "val"
        reports.write_confusion_matrix(tmp, metrics["per_split"][shown]["confusion_matrix"],
                                       names, shown)
        n_wrong = reports.write_misclassified(
            tmp / "misclassified.csv", [(n, *results[n][:2], results[n][3]) for n in results],
            names)
        metrics.update({
            "confusion_matrix_split": shown,
            "n_misclassified": n_wrong,
            "split": {"how": split.how, "n_train": len(split.train), "n_val": len(split.val),
                      "n_test": len(split.test), "test_split": "store" if "test" in store.splits
                      else (f"held out {opts['test_fraction']:.0%} of the store, seed "
                            f"{opts['seed']}" if len(split.test) else "none"),
                      "groups_in_more_than_one_split": overlap},
            "output": output_reason,
            "best_epoch": best_epoch,
            "epochs_run": len(history["loss"]),
            "class_weight": opts["class_weight"],
            "training": "streamed from the store" if streamed else "in memory",
            "train_seconds": round(seconds, 2),
        })
        if cv_report:
            metrics["cross_validation"] = cv_report
        from pipeline.fit import calibration

        calibrated, curve = extras  # temperature + reliability diagram; learning curve
        _, val_labels, _, val_probs = results["val"]
        metrics["calibration"] = calibration.write_calibration(tmp, calibrated, val_labels,
                                                               val_probs)
        if curve:
            calibration.write_learning_curve(tmp, curve, f"{store.path.stem}: head")
            metrics["learning_curve"] = curve
        reports.write_json(tmp / "metrics.json", metrics)
        reports.write_json(tmp / "run.json", {
            "kind": "keras_head", "store": str(store.path.resolve()), "store_key": store.key,
            "provenance": store.provenance, "class_names": list(names),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "feature_shape": list(store.feature_shape),
        })
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
