"""Stage two: train a dense Keras head on a feature store and write a run folder.

The rows: an untouched test share (the honest score), validation rows that choose the epoch
and the learning-rate decay, a calibration share of the training rows that fits the
temperature, and the training rows proper.

The head: the one its options describe; with no head option given, the one that
cross-validation on the training rows alone chooses (`choice.py`: linear or one hidden layer,
its L2 penalty, its input scaling). A linear head is solved exactly (`linear.py`) on every
non-test row outside the calibration share, the validation rows included since it has no
epoch to choose; a hidden-layer head trains by Adam with early stopping on the validation
rows. On data too small for a test, validation or calibration share, a chosen head goes
without it (one `note:` line each) instead of refusing. The run folder is `run_folder.py`'s.

Usage:
    from pipeline.fit.run import fit_head
    run_dir = fit_head("cache/flowers5-mobilenet-pooled-1a2b3c4d5e.h5", {"epochs": 50})
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.evaluation import checks, curves
from pipeline.evaluation.calibration import MIN_CALIBRATION_ROWS
from pipeline.evaluation.decisions import apply_decisions
from pipeline.evaluation.exclusions import adopt_audit_groups, audited_split
from pipeline.evaluation.splits import cv_folds, holdout, make_split
from pipeline.fit import calibration, choice as head_choice, linear
from pipeline.fit.cross_validation import cross_validate
from pipeline.fit.heads import resolve_output
from pipeline.fit.options import HeadConfig
from pipeline.fit.run_folder import FittedHead, shown_split, write_run
from pipeline.fit.training import (HeadTrainer, probabilities, should_stream, solved_head,
                                   solved_probabilities, train_head)
from pipeline.outputs import check_writable_folder
from pipeline.store.feature_store import open_store


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
        DataError: too few or unlabelled samples for the requested splits (a chosen head
            refuses only a class with fewer than 2 rows).
        StoreError: the store is missing or unreadable.
        OutputError: `--out` cannot be a writable folder (checked before training), or the run
            folder could not be written (the message names where the trained head was kept).
    """
    from pipeline.fit import head_data  # lazy: loads Keras

    config = HeadConfig.from_mapping(options)
    out_dir = check_writable_folder(out_dir or config.out, "--out")  # before any training
    # A chosen or exactly solved head needs no validation rows: shares the data cannot afford
    # are skipped, with a note, where a head given by options is refused as before.
    tolerant = config.chooses_head or config.fixed().solved_exactly
    with open_store(store_path) as store:
        n_classes = len(store.class_names)
        output = resolve_output(n_classes, config.output, config.loss, config.config_file)
        if config.groups_from_audit:
            adopt_audit_groups(store, echo)
        decisions = apply_decisions(store, config.decisions, echo)  # relabels before the check
        labels = store.column("labels")
        if (labels < 0).any():
            raise DataError(f"store {store.path.name} has {int((labels < 0).sum())} unlabelled "
                            "row(s); fit-head needs a label on every row (extract a labelled "
                            "folder or manifest).")
        split = _split(store, config, tolerant, echo)
        split = audited_split(store, split, config.exclude_leaks, echo, decisions)
        fit_rows, cal_rows, cal_skipped = _calibration_rows(store, split.train, config,
                                                            tolerant)
        # A store made with --views: the views of the training files (never of a validation,
        # calibration or test file) train beside their plain rows; a solved head trains on
        # the validation files too.
        index = store.row_index
        view_pool = np.concatenate([split.train, split.val]) if config.cv or tolerant \
            else fit_rows
        needed = np.concatenate([split.train, split.val, split.test,
                                 index.views_of(view_pool, config.train_views)])
        streamed = should_stream(store, len(needed), config)
        if streamed and tolerant:
            if not config.chooses_head:
                raise ConfigError("solver lbfgs holds the training vectors in memory, and they "
                                  "exceed --memory-limit-mb; raise it, or use --solver adam")
            echo("note: the vectors exceed --memory-limit-mb, so the head is not chosen: the "
                 "fixed head (one hidden layer of 256) trains, streamed from the store")
            config = config.fixed()
        echo(f"{store.path.name}: {len(store)} vectors {store.feature_shape}, "
             f"{n_classes} classes; train {len(fit_rows)}, calibration {len(cal_rows)}, val "
             f"{len(split.val)}, test {len(split.test)} ({split.how}); {output.reason}; "
             f"{_views_line(len(index.with_views(fit_rows, config.train_views)) - len(fit_rows))}"
             f"; {'streamed from the store' if streamed else 'in memory'}")
        source = None if streamed else head_data.InMemoryVectors(store, needed)
        data_checks = _check_data(store, source, split, echo)
        data_checks["warnings"] += _echo_all(list(split.warnings), echo)
        if cal_skipped and tolerant and config.calibration_fraction:
            data_checks["warnings"] += _echo_all([f"note: {cal_skipped}"], echo)
        started = time.perf_counter()
        head_config, head, choice = _head(store, source, split, fit_rows, config, echo)
        fit = _train(store, source, split, fit_rows, cal_rows, head_config, head, echo)
        if "l2" in head:  # solved: the penalty that C on these rows is
            head_config = head_config.replace(l2=head["l2"])
        cv_report, cv_table = (cross_validate(store, source, split, head_config, echo,
                                              solved_C=head.get("C"))
                               if config.cv else (None, None))
        if cv_report:
            data_checks["warnings"] += _echo_all(
                checks.tiny_data_warnings(fold_scores=[f["val_accuracy"]
                                                       for f in cv_report["folds"]]), echo)
        seconds = time.perf_counter() - started
        model = fit["model"]
        evaluated = fit["evaluated"]
        results = {name: probabilities(model, store, source, rows) for name, rows in evaluated}
        # T fitted on the calibration rows (which chose nothing else) and folded into the
        # output layer: head.keras, the recorded probabilities, predict and export agree.
        calibrated = calibration.calibrate(model, fit["calibration"](), results, cal_skipped)
        if calibrated.get("skipped") and config.calibration_fraction and not tolerant:
            data_checks["warnings"] += _echo_all([f"warning: {calibrated['skipped']}"], echo)
        shown = shown_split(results)
        raw_shown = results[shown][3] if shown else None
        results = {name: probabilities(model, store, source, rows) for name, rows in evaluated}
        final_weights = model.get_weights()
        try:
            curve = fit["curve"]() if config.learning_curve else None
        except DataError:  # too few rows or groups for the curve's fold: no curve
            curve = None
        model.set_weights(final_weights)  # the curve's heads retrained the same compiled model
        data_checks["train_view_rows"] = int(len(fit["train_rows"]) - len(fit["plain_rows"]))
        run_dir = write_run(store, FittedHead(
            head_config=_recorded(head_config, split, store, cal_skipped),
            model=model, history=fit["history"], best_epoch=fit["best_epoch"], split=split,
            results=results, n_calibration=len(cal_rows), cv=(cv_report, cv_table),
            streamed=streamed, seconds=seconds, output_reason=output.reason,
            data_checks=data_checks, calibrated=calibrated, raw_shown=raw_shown, curve=curve,
            head=head, decisions=decisions), out_dir, echo)
    echo(_summary(results, split, cv_report, fit, head))
    return run_dir


def _head(store, source, split, fit_rows, config: HeadConfig, echo):
    """(the settings of the head to train, how it came about, the choice or None)."""
    if not config.chooses_head:
        fixed = config.fixed()
        head = {"chosen": False, "given": "by options",
                "solver": "lbfgs" if fixed.solved_exactly else "adam"}
        if fixed.solved_exactly:  # on every non-test row (see _train)
            n = len(store.row_index.with_views(np.concatenate([split.train, split.val]),
                                               config.train_views))
            head["C"] = 1.0 / (2.0 * fixed.l2 * n)  # linear.keras_l2 solved for C
        return fixed, head, None
    index = store.row_index
    labels = store.full_column("labels")

    def hidden_probs(train, held, l2, fold):
        fit, stop = holdout(train, labels, index.group, config.val_fraction,
                            config.seed + fold, config=config.config_file)
        hidden = config.fixed(**head_choice.HIDDEN_OPTIONS, l2=l2)
        model = train_head(store, source, index.with_views(fit, config.train_views), stop,
                           hidden, echo, prefix=f"hidden head, fold {fold + 1}: ")[0]
        return probabilities(model, store, source, held)[3]

    found = head_choice.choose_head(
        source.get, labels, fit_rows, index.group, len(store.class_names), config,
        with_views=lambda rows: index.with_views(rows, config.train_views),
        hidden_probs=hidden_probs if _tries_hidden(store, split.train, split.val) else None,
        class_names=store.class_names)
    for line in found.table():
        echo(line)
    winner = found.winner
    head = {"chosen": True, "choice": found.report(),
            "solver": "lbfgs" if found.linear else "adam",
            **({"C": winner["C"]} if found.linear else {})}
    return config.fixed(**found.options, solver=head["solver"]), head, found


def _train(store, source, split, fit_rows, cal_rows, config: HeadConfig, head: dict,
           echo) -> dict:
    """Trains the head; returns its model, history, the held-out splits to score, the rows it
    trained on, and functions giving the calibration rows' probabilities and the learning
    curve.

    A solved head's temperature comes from the calibration rows' probabilities under the
    head solved without them; the head is then solved again on every non-test row, the
    calibration rows among them, and keeps that temperature."""
    index = store.row_index
    labels = store.full_column("labels")
    n_classes = len(store.class_names)
    if config.solved_exactly:
        plain = np.sort(np.concatenate([fit_rows, split.val, cal_rows]))
        rows = index.with_views(plain, config.train_views)
        model, solved = solved_head(source.get(rows), labels[rows], n_classes, config,
                                    head["C"], store.feature_shape)
        head.update(solved, calibration_rows_train=bool(len(cal_rows)))
        choice = head.get("choice")
        k = choice["folds"] if choice else head_choice.fold_count(
            labels[fit_rows], index.group[fit_rows], len(fit_rows))
        first = cv_folds(fit_rows, labels, index.group, max(k, 2), config.seed)[0]

        def score(train, held):
            """Probabilities on `held` of the head solved on the plain rows `train`."""
            trained = index.with_views(train, config.train_views)
            return solved_probabilities(source.get(trained), labels[trained], source.get(held),
                                        n_classes, config, head["C"])

        def calibration_rows():
            if not len(cal_rows):
                return None
            held = np.sort(cal_rows)
            probs = score(np.concatenate([fit_rows, split.val]), held)
            return (store.column("ids")[held], labels[held],
                    float(np.mean(probs.argmax(1) == labels[held])), probs)

        def curve():  # shares of the first fold's training rows, scored on its held-out rows
            held = np.sort(first[1])
            return curves.learning_curve(
                lambda r: float(np.mean(score(r, held).argmax(1) == labels[held])),
                np.sort(first[0]), labels, None, config.seed)

        return {"model": model, "history": {"loss": [solved["train_log_loss"]],
                                            "accuracy": [solved["train_accuracy"]]},
                "best_epoch": None, "plain_rows": plain, "train_rows": rows, "curve": curve,
                "calibration": calibration_rows,
                "evaluated": [("test", split.test)] if len(split.test) else []}
    rows = index.with_views(fit_rows, config.train_views)
    trainer = HeadTrainer(store, source, config, rows, echo)
    model, history, best_epoch = trainer.train(rows, split.val)

    def curve():
        full = probabilities(model, store, source, split.val)[2]
        return curves.learning_curve(
            lambda r: probabilities(trainer.train(index.with_views(r, config.train_views),
                                                  split.val, progress=False)[0],
                                    store, source, split.val)[2],
            fit_rows, labels, full, config.seed)

    return {"model": model, "history": history, "best_epoch": best_epoch, "curve": curve,
            "plain_rows": fit_rows, "train_rows": rows,
            "calibration": lambda: probabilities(model, store, source, cal_rows)
            if len(cal_rows) else None,
            "evaluated": [(n, r) for n, r in (("val", split.val), ("test", split.test))
                          if len(r)]}


def _tries_hidden(store, *pools) -> bool:
    """Whether a chosen head may have a hidden layer: every class has HIDDEN_MIN_PER_CLASS
    rows outside the test split (fewer train a linear head as well and stop it on nothing)."""
    labels = store.column("labels")
    counts = np.bincount(labels[np.concatenate(pools)], minlength=len(store.class_names))
    return bool(counts[counts > 0].min() >= head_choice.HIDDEN_MIN_PER_CLASS)


def _split(store, config: HeadConfig, tolerant: bool, echo):
    """The split: a chosen head without a hidden layer to try needs no validation rows (a
    linear head has no epoch to choose), so they train instead."""
    def made(hold_out_val: bool):
        return make_split(store, config.val_fraction, config.seed, config.test_fraction,
                          config=config.config_file, skip_unaffordable=tolerant,
                          hold_out_val=hold_out_val)

    if not config.chooses_head:
        return made(True)
    split = made(False)
    if len(split.val) or _tries_hidden(store, split.train):
        return made(True)
    return replace(split, warnings=split.warnings + (
        f"note: no validation share: with fewer than {head_choice.HIDDEN_MIN_PER_CLASS} rows "
        "in a class no hidden-layer head is tried, and a linear head has no epoch to "
        "choose",))


def _recorded(head_config: HeadConfig, split, store, cal_skipped) -> HeadConfig:
    """The options config.toml records: the head trained, and no share that was skipped, so
    that `--config config.toml` trains the same head on the same rows."""
    changes = {}
    if not len(split.test) and "test" not in store.splits:
        changes["test_fraction"] = 0.0
    if cal_skipped:
        changes["calibration_fraction"] = 0.0
    return head_config.replace(**changes)


def _summary(results: dict, split, cv_report, fit: dict, head: dict) -> str:
    """The last progress line: every score with the rows it comes from."""
    parts = []
    if "test" in results:
        parts.append(f"test_accuracy {results['test'][2]:.4f} (the {len(split.test)} untouched "
                     "test rows: the honest score)")
    if "val" in results:
        parts.append(f"val_accuracy {results['val'][2]:.4f} (the {len(split.val)} rows that "
                     "chose the epoch: optimistic)")
    if cv_report:
        parts.append(f"cv accuracy {cv_report['val_accuracy_mean']:.4f} +/- "
                     f"{cv_report['val_accuracy_std']:.4f} (held-out fold rows that chose "
                     "nothing)")
    choice = head.get("choice")
    if not results and choice:
        parts.append(f"cross-validation accuracy {choice['winner']['accuracy']:.4f} (out of "
                     f"fold, on {choice['n_rows']} training rows: no row was left to test on)")
    if fit["best_epoch"]:
        how = f"epoch {fit['best_epoch']} of {len(fit['history'].get('loss', []))} kept"
    else:
        how = f"linear head solved exactly (C={head['C']:.3g}) on every non-test row"
        how += f" ({head['n_rows']}, the validation and calibration rows among them)" \
            if len(split.val) or head.get("calibration_rows_train") else f" ({head['n_rows']})"
    return ", ".join(parts) + f"; {how}"


def _calibration_rows(store, train_rows, config: HeadConfig, tolerant: bool):
    """(rows that train, rows that fit T, why calibration is skipped or None). A tolerant run
    holds no share out that could not fit T (fewer than MIN_CALIBRATION_ROWS rows): those
    rows train instead."""
    empty = np.array([], dtype=np.int64)
    if not config.calibration_fraction:
        return train_rows, empty, "calibration is off (calibration_fraction = 0)"
    share = int(round(config.calibration_fraction * len(train_rows)))
    if tolerant and share < MIN_CALIBRATION_ROWS:
        return train_rows, empty, (
            f"no calibration share: {config.calibration_fraction:.0%} of {len(train_rows)} "
            f"training rows is {share}, fewer than the {MIN_CALIBRATION_ROWS} a temperature "
            "needs; they train instead, and the probabilities are not calibrated")
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
    if len(split.val):  # none: a note said why
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
