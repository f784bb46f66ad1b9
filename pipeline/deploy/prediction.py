"""Predict with a run folder: raw images or clips in, class probabilities out.

New files go through the same extraction code as training (`run_extraction` with the options
recorded in the store's provenance, cache included), so the head only ever sees vectors made by
the backbone, layer, weights and preprocessing it was trained on.

Usage:
    from pipeline.deploy.prediction import predict
    csv_path = predict("cache/runs/flowers5-mobilenet-pooled-1a2b3c4d5e-head-20250101-120000",
                       "new_photos/")
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.deploy.options import PredictConfig
from pipeline.deploy.run_files import (MODIFIED, check_head_fits, load_head_file,
                                       locate_recorded_file, read_checked_run, run_store_path)
from pipeline.errors import ConfigError, DataError, OutputError, StoreError, WeightsError
from pipeline.outputs import (Scratch, check_own_file, check_writable_folder, is_own_csv,
                              is_own_json, require_regular_file)
from pipeline.tables import read_rows
from pipeline.store.vector_identity import (KEY_FIELD, describe_differences, vector_differences,
                                            vector_key)
from pipeline.fit.heads import predict_proba
from pipeline.fit.calibration import read_temperature, scale_output_layer
from pipeline.extract.backbones import get_backbone
from pipeline.extract.backbones.weights import identity_for
from pipeline.plugins import check_recorded_plugins, load_plugins
from pipeline.extract.run import run_extraction, vector_settings
from pipeline.extract.sources import create_reader
from pipeline.deploy.seen_rows import rows_of_the_run
from pipeline.deploy.tta import tta_average, tta_extract_options
from pipeline.fit import reports
from pipeline.store.feature_store import open_store
from pipeline.search.io import SIDECAR, load_best_model
from pipeline.extract.engines import active_backend


@dataclass
class LoadedRun:
    """A run folder's model, whatever trained it (fit-head or grid-search)."""

    run_dir: Path
    kind: str
    info: dict
    class_names: list
    predict_proba: Callable[[np.ndarray], np.ndarray]
    keras_head: Any  # keras.Model from features to (n, K) or (n, 1) probabilities, or None

    @property
    def provenance(self) -> dict:
        return self.info.get("provenance") or {}


def load_run(run_dir, provenance: dict | None = None, calibrate: bool = True,
             info: dict | None = None) -> LoadedRun:
    """Loads a run folder's model.

    Args:
        run_dir: folder written by fit-head (`head.keras`) or grid-search.
        provenance: provenance of the vectors about to be scored; a grid-search model refuses
            vectors of another backbone, layer, pooling, size, preprocessing or weights.
        calibrate: keep the temperature fit-head folded into head.keras; False gives the raw
            softmax (`--no-calibrate`).
        info: the run's run.json as `read_checked_run` returned it (read and checked when
            not given).

    Returns:
        A `LoadedRun` whose `predict_proba(features)` gives (n, K) probabilities.
    """
    run_dir = Path(run_dir)
    info = info or read_checked_run(run_dir)
    if info["kind"] == "grid_search":
        best = load_best_model(run_dir, provenance=provenance)
        if list(best.class_names) != info["class_names"]:
            raise StoreError(f"{run_dir / SIDECAR} names the classes {best.class_names!r:.80} "
                             f"and run.json {info['class_names']!r:.80}; {MODIFIED}")
        return LoadedRun(run_dir, "grid_search", info, list(best.class_names),
                         best.predict_proba, best.keras_head)
    import keras

    path = run_dir / "head.keras"
    require_regular_file(path, "run file", fix="run fit-head again.")
    if not path.is_file():
        raise ConfigError(f"run folder {run_dir} has no head.keras; run fit-head again.")
    model = load_head_file(keras, path)
    check_head_fits(model, info, run_dir)

    if not calibrate and read_temperature(run_dir):
        scale_output_layer(model, 1.0 / read_temperature(run_dir))
    return LoadedRun(run_dir, "keras_head", info, list(info["class_names"]),
                     lambda x: predict_proba(model, x), model)


def check_weights_unchanged(extract_options: dict, provenance: dict) -> None:
    """Refuses a weights file whose bytes differ from those the head was trained behind."""
    if extract_options["weights"] == "none":
        # Random weights are seeded, so the same backend draws the same network again.

        drawn_on = (provenance.get("random_init") or {}).get("backend")
        if drawn_on and drawn_on == active_backend():
            return
        raise WeightsError(
            f"the run's vectors came from random weights (--weights none) drawn by the "
            f"{drawn_on or 'unknown'} backend, which this process ({active_backend()}) cannot "
            "draw again; run predict with KERAS_BACKEND set to that backend, or extract with "
            "--weights imagenet or a weights file and fit-head again.")
    now = identity_for(get_backbone(extract_options["backbone"]), extract_options["weights"])
    if now != provenance.get("weights"):
        raise WeightsError(
            f"weights {extract_options['weights']} are not the ones this head was trained with "
            f"(now {now[:19]}, trained with {str(provenance.get('weights'))[:19]}); restore the "
            "original file, or extract and fit-head again with the new weights.")


def extract_options_of(info: dict) -> dict:
    """The extract options recorded in a run's store provenance (needed to re-extract)."""
    provenance = info.get("provenance") or {}
    options = provenance.get("extract_options")
    if not options and provenance.get("imported"):
        name = provenance["imported"].get("name")
        raise StoreError(f"the run was fitted on imported vectors ({name}): there is no "
                         "backbone to turn new files into vectors. Make the new files' vectors "
                         "as you made those, and score them in Python: "
                         "featcache.load_model(RUN).predict_proba(vectors) (docs/library.md).")
    if not options:
        raise StoreError("the run's store was not made by extract (its provenance has no "
                         "extract_options, e.g. a store written with write_store), so new files "
                         "cannot be turned into matching vectors; fit the head on an extracted "
                         "store.")
    return dict(options)


def refuse_other_vectors(trained: dict, given: dict, what: str) -> None:
    """Raises unless `given` describes the vectors the run's model was trained on (the one
    vector key of pipeline/store/vector_identity.py)."""
    diffs = vector_differences(trained, given)
    if diffs:
        raise StoreError(f"{what} would differ from the vectors this run was trained on "
                         f"({describe_differences(diffs)}); use the run's own extract settings "
                         "(or extract with the new ones and fit again).")


def check_rebuilt_vectors(extract_opts: dict, trained: dict, what: str) -> None:
    """The extractor rebuilt from the run's recorded options must give the run's vector key:
    checked before anything is extracted or built."""
    spec = get_backbone(extract_opts["backbone"])
    reader = create_reader(spec, spec.input_shape_for(extract_opts.get("input_size"),
                                                extract_opts.get("frames")),
                           extract_opts)
    identity = vector_settings(extract_opts, spec, reader,
                               identity_for(spec, extract_opts["weights"]))
    if trained.get("calibration"):  # int8: the training store's calibration, reused as is
        identity["calibration"] = trained["calibration"]
    refuse_other_vectors(trained, {**identity, KEY_FIELD: vector_key(identity)}, what)


def reuse_extract_options(run_dir, info: dict, options, command: str) -> dict:
    """The run's extract options with its files found again, its weights checked, and the
    extractor they rebuild checked to make the run's vectors (`options`: a PredictConfig or
    an ExportConfig, whose `weights` / `mean_file` / `backbone` say where moved files and a
    moved preset directory are now)."""
    extract_opts = extract_options_of(info)
    load_plugins(options.plugin)  # the user's: the backbone may be a plugin's
    check_recorded_plugins(extract_opts.get("plugin"), run_dir, command)
    for key in ("weights", "mean_file"):
        recorded, given = extract_opts.get(key), getattr(options, key)
        if key == "weights" and recorded in ("imagenet", "none"):
            continue
        if recorded or given:
            extract_opts[key] = locate_recorded_file(recorded or "", run_dir, given, key,
                                                     command)
    trained = info.get("provenance") or {}
    if options.backbone or _is_preset_path(extract_opts["backbone"], trained):
        if "preset" not in trained:
            raise ConfigError(f"{command} --backbone: the run {run_dir} was not made from a "
                              "KerasHub preset directory, so there is no directory to find "
                              "again; leave out --backbone")
        extract_opts["backbone"] = locate_recorded_file(extract_opts["backbone"], run_dir,
                                                        options.backbone, "backbone", command,
                                                        folder=True)
    check_weights_unchanged(extract_opts, trained)
    try:
        check_rebuilt_vectors(extract_opts, trained, f"the extractor {command} rebuilds from "
                              f"the options recorded in {Path(run_dir) / 'run.json'}")
    except StoreError as exc:  # the recorded options disagree with the recorded vectors
        raise StoreError(f"{exc} Unless the backbone's code or plugins changed, "
                         f"{MODIFIED}") from None
    return extract_opts


def _is_preset_path(backbone: str, trained: dict) -> bool:
    """Whether the run's backbone is a KerasHub preset named by its directory's path (not a
    handle or a built-in name), which may have moved since."""
    return "preset" in trained and "://" not in backbone and \
        (Path(backbone).is_absolute() or "/" in backbone or os.sep in backbone)


def predict(run_dir, data, options=None, echo=print) -> Path:
    """Extracts `data` as the run's store was extracted, scores it, and writes a CSV.

    Args:
        run_dir: a fit-head or grid-search run folder.
        data: a folder (class folders, loose files or both), one file, or a CSV manifest.
        options: a `PredictConfig` or a mapping of its options: `out` (CSV path), `cache_dir`
            (default RUN_DIR/predict), `batch_size`, `workers`, `progress`, `weights` /
            `mean_file` when those files have moved, and `calibrate` (False: raw softmax,
            without the fitted temperature).
        echo: where progress lines go.

    Returns:
        Path of the CSV: id, [true_class,] predicted_class, p_<class> for each class. With
        labelled data, the accuracy is printed and written beside it (`<csv>-accuracy.json`),
        with how many scored rows the run itself trained, validated or tested on.

    Raises:
        ConfigError, StoreError, WeightsError, DataError: see their messages. OutputError:
            `--out` is a file this tool did not write, or the place to write is read-only.
    """
    cfg = PredictConfig.from_mapping(options).replace(run_dir=str(run_dir), data=str(data))
    run_dir = Path(run_dir)
    info = read_checked_run(run_dir)
    extract_opts = reuse_extract_options(run_dir, info, cfg, "predict")
    out_folder = _check_output_place(cfg, run_dir)
    with ExitStack() as scratch_stack:
        # New vectors are cached inside the run folder: predicting never litters the shared
        # cache. A read-only run folder: in a scratch folder beside the CSV, removed after.
        cache_dir = cfg.cache_dir or (run_dir / "predict" if _writable(run_dir, "predict")
                                      else scratch_stack.enter_context(
                                          Scratch(out_folder, "predict")))
        return _predict_into(run_dir, data, cfg, info, extract_opts, cache_dir, echo)


def _writable(folder: Path, sub: str) -> bool:
    target = folder / sub
    return os.access(target if target.is_dir() else folder, os.W_OK | os.X_OK)


def _check_output_place(cfg: PredictConfig, run_dir: Path) -> Path:
    """The folder the CSV goes to, checked before anything is extracted: `--out` as a file
    (a new one, or a predictions CSV this tool wrote), `--out` as an existing folder (the
    CSV goes inside it), else the run folder, which must then be writable."""
    if cfg.cache_dir:
        check_writable_folder(cfg.cache_dir, "--cache-dir")
    if cfg.out and Path(cfg.out).is_dir():
        return check_writable_folder(cfg.out, "--out")
    if cfg.out:
        return check_own_file(Path(cfg.out), "--out", _is_own_predictions, "predictions CSV",
                              "predictions.csv").parent
    if not _writable(run_dir, ""):
        raise OutputError(f"the run folder {run_dir} is read-only, so the predictions cannot "
                          "be written beside it; pass --out FILE.csv in a folder you can "
                          "write to.")
    return run_dir


def _is_own_predictions(path: Path) -> bool:
    return is_own_csv(path, "id", "predicted_class")


def _predict_into(run_dir: Path, data, cfg: PredictConfig, info: dict, extract_opts: dict,
                  cache_dir, echo) -> Path:
    trained = info.get("provenance") or {}
    extract_opts.update(data=str(data), cache_dir=str(cache_dir),
                        batch_size=cfg.batch_size, workers=cfg.workers)
    if trained.get("calibration"):  # an int8 run: the same quantized model, not a new one
        extract_opts["calibration"] = trained["calibration"]
    extract_opts.update(tta_extract_options(cfg, trained))  # --tta: views of the new files
    result = run_extraction(extract_opts, progress=cfg.progress, echo=echo,
                            require_labels=False)
    if result.n_samples and not result.n_rows:  # as extract: nothing to score is an error
        raise DataError(f"none of the {result.n_samples} file(s) could be decoded, so there is "
                        f"nothing to predict; `run_pipeline.py info {result.path}` lists each "
                        "file's reason. Fix or replace the files and run predict again.")
    with open_store(result.path) as store:
        refuse_other_vectors(trained, store.provenance, f"new vectors (store {store.path.name})")
        run = load_run(run_dir, provenance=store.provenance, calibrate=cfg.calibrate,
                       info=info)
        names = run.class_names
        probs = np.concatenate([run.predict_proba(x) for x, _ in
                                store.iter_batches(batch_size=4096)]) if len(store) else \
            np.zeros((0, len(names)))
        probs = tta_average(run, store, probs) if cfg.tta else probs
        true, unseen = _true_labels(store, names)
        default_name = f"predictions-{store.provenance.get('data_name', 'data')}.csv"
        out = Path(cfg.out) / default_name if cfg.out and Path(cfg.out).is_dir() else \
            Path(cfg.out or run_dir / default_name)
        check_own_file(out, "--out", _is_own_predictions, "predictions CSV", "predictions.csv")
        check_own_file(_accuracy_path(out), "--out", lambda p: is_own_json(p, "predictions"),
                       "predictions CSV", "predictions.csv")
        reports.write_predictions(out, store.column("ids"), true, probs, names)
        failures = store.failures()
        seen = rows_of_the_run(run_dir, info, store, run_store_path(run_dir, info))
    if unseen:
        echo(f"warning: class folder(s) {', '.join(sorted(unseen))} are not classes of this run "
             f"(it knows {', '.join(names)}); their {sum(unseen.values())} row(s) are scored but "
             "have no true_class and are left out of the accuracy")
    if failures:
        echo(f"{len(failures)} file(s) could not be decoded and have no prediction, e.g. "
             f"{failures[0][0]}: {failures[0][1]}")
    echo(f"predicted {len(probs)} row(s) with {run.kind} {run_dir.name}")
    labelled = true is not None and bool((true >= 0).any())
    if seen is None and labelled:  # the accuracy may be over training rows: say it is unknown
        echo(f"note: the run's store ({info.get('store')}) is gone or has changed since the "
             "run, so whether these files were among its training rows is not known")
    elif seen is not None and seen["new"] < len(probs):
        echo(f"note: {len(probs) - seen['new']} of the {len(probs)} scored rows are rows of this "
             f"run's own store ({seen['train']} training, {seen['val']} validation and "
             f"{seen['test']} test rows, matched by file and stamp or by identical vector); an "
             "accuracy over training or validation rows is not an estimate on new files")
    if labelled:
        _report_accuracy(out, true, probs, unseen, seen, echo)
    return out


def _accuracy_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + "-accuracy.json")


def _report_accuracy(csv_path: Path, true: np.ndarray, probs: np.ndarray, unseen: dict,
                     seen: dict, echo) -> None:
    known = true >= 0
    accuracy = float((probs[known].argmax(axis=1) == true[known]).mean())
    echo(f"accuracy {accuracy:.3f} on {int(known.sum())} labelled row(s)")
    path = _accuracy_path(csv_path)
    path.write_text(json.dumps({"accuracy": accuracy, "n_labelled": int(known.sum()),
                                "n_rows": len(true), "unseen_classes": dict(sorted(unseen.items())),
                                "rows_of_the_run": seen, "predictions": csv_path.name},
                               indent=2) + "\n", encoding="utf-8")


def _true_labels(store, names: list) -> tuple[np.ndarray | None, dict]:
    """Labels of a labelled folder in the run's class order (-1 where unknown), else None; and
    {class folder the run never saw: row count}."""
    labels = store.column("labels")
    if not len(labels) or (labels < 0).all():
        return None, {}
    index = {name: i for i, name in enumerate(names)}
    found = [store.class_names[l] if l >= 0 else None for l in labels.tolist()]
    unseen: dict = {}
    for name in found:
        if name is not None and name not in index:
            unseen[name] = unseen.get(name, 0) + 1
    mapped = [index.get(name, -1) if name is not None else -1 for name in found]
    return np.asarray(mapped, dtype=np.int64), unseen


def read_predictions(path) -> dict:
    """`{id: probabilities}` from a predictions CSV (ours: fit-head's or predict's)."""
    rows = read_rows(path)
    cols = [c for c in (rows[0].keys() if rows else []) if c.startswith("p_")]
    return {r["id"]: np.array([float(r[c]) for c in cols]) for r in rows}
