"""Saving and loading the best model of a grid search, without ever unpickling anything.

A run folder holds:
    run.json           kind "grid_search", the store, its key, provenance and class names, and
                       the sha256 of the class names, the model files and the sidecar
    best_model.skops   the scikit-learn pipeline (skops.io: a zip of JSON + numpy arrays)
    best_model.keras   the Keras head when the best entry is `keras_head` (its preprocessing
                       steps are then in best_model.skops); loaded in Keras' safe mode
    best_model.json    sidecar: format, sha256 of each model file, store, provenance, params

Loading reads only the files the sidecar names, only with the suffixes above, only when their
sha256 matches, and only when the skops file holds no types outside `TRUSTED_TYPES`. Pickle
and joblib files in a run folder are never opened.

Usage:
    model = load_best_model("cache/runs/flowers5-...-search-20250101-120000",
                            provenance=store.provenance)
    proba = model.predict_proba(features)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.errors import StoreError
from pipeline.outputs import file_sha256, require_regular_file, run_digests, write_json
from pipeline.store.vector_identity import describe_differences, vector_differences
from pipeline.fit.heads import predict_proba
from pipeline.search.keras_form import to_keras_model

SIDECAR = "best_model.json"
SKOPS_FILE = "best_model.skops"
KERAS_FILE = "best_model.keras"
FORMATS = {"skops": (SKOPS_FILE,), "skops+keras": (SKOPS_FILE, KERAS_FILE),
           "keras": (KERAS_FILE,)}
# Types skops does not trust by default but our families need: scikit-learn's own compiled
# tree and neighbour structures, rebuilt from arrays. Anything else in a file is refused.
TRUSTED_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
)

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_run_json(run_dir: Path, meta: dict) -> None:
    """run.json, the contract shared with fit-head's run folders (predict/export read it)."""
    write_json(Path(run_dir) / "run.json", {"kind": "grid_search", **meta, "created_at": _now()})


def save_best_model(run_dir: Path, fitted, meta: dict, **info) -> Path:
    """Saves a fitted pipeline as skops (+ .keras for a Keras head) and writes the sidecar.

    Args:
        run_dir: the run folder.
        fitted: a fitted scikit-learn `Pipeline` whose last step is the classifier.
        meta: store, store_key, provenance and class_names (as in run.json).
        **info: model name, family, params and scores, copied into the sidecar.

    Returns:
        The sidecar's path. run.json is written again with the digests of the model files,
        the sidecar and the class names.

    Raises:
        StoreError: the pipeline holds types that loading would refuse.
    """
    import skops.io as sio
    import sklearn
    from sklearn.pipeline import Pipeline

    run_dir = Path(run_dir)
    final = fitted.steps[-1][1]
    files = []
    if hasattr(final, "model_") and type(final).__name__ == "KerasHeadClassifier":
        final.model_.save(run_dir / KERAS_FILE)
        files.append(KERAS_FILE)
        if len(fitted.steps) > 1:
            sio.dump(Pipeline(fitted.steps[:-1]), run_dir / SKOPS_FILE)
            files.insert(0, SKOPS_FILE)
        kind = "skops+keras" if len(files) == 2 else "keras"
    else:
        sio.dump(fitted, run_dir / SKOPS_FILE)
        files.append(SKOPS_FILE)
        kind = "skops"
    if SKOPS_FILE in files:
        try:
            _check_skops_types(run_dir / SKOPS_FILE)
        except StoreError:
            for name in files:  # a file load_best_model would refuse is not left behind
                (run_dir / name).unlink(missing_ok=True)
            raise
    versions = {"scikit-learn": sklearn.__version__, "skops": _version("skops")}
    if KERAS_FILE in files:
        versions["keras"] = _version("keras")
    sidecar = {"format": kind, "files": {name: file_sha256(run_dir / name) for name in files},
               "classes": [int(c) for c in final.classes_], **info, **meta,
               "versions": versions, "created_at": _now()}
    write_json(run_dir / SIDECAR, sidecar)
    # run.json again, now with the digests of the model files and the sidecar (checked by
    # predict and export before they trust the folder).
    write_run_json(run_dir, {**meta, **run_digests(run_dir, [*files, SIDECAR],
                                                   meta["class_names"])})
    return run_dir / SIDECAR


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _check_skops_types(path: Path) -> list:
    import zipfile

    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is not a skops file ({type(exc).__name__}); it was not "
                         "loaded. Run grid-search again to make a new one.") from None
    refused = [t for t in untrusted if t not in TRUSTED_TYPES]
    if refused:
        raise StoreError(f"{path} holds types outside the trusted list: {', '.join(refused)}; "
                         "refusing to load it (loading could run their code). If you made "
                         "this file yourself, load it with skops.io.load(..., trusted=[...]).")
    return untrusted


def check_provenance(saved: dict, given: dict, where: str) -> None:
    """Refuses vectors whose identity (pipeline/store/vector_identity.py) differs from the one
    the model was trained on.

    Raises:
        StoreError: naming each differing setting, both values and the fix.
    """
    diffs = vector_differences(saved, given)
    if diffs:
        raise StoreError(f"the model in {where} was trained on vectors made with other "
                         f"settings ({describe_differences(diffs, 'model', 'given')}); use a run "
                         "made on a store with these settings, or extract with the model's "
                         "settings.")


def load_best_model(run_dir, provenance: dict | None = None) -> "BestModel":
    """Loads the best model of a grid-search run folder, after checking it.

    Args:
        run_dir: a grid-search run folder (holds run.json and best_model.json).
        provenance: the provenance of the vectors the model will see (a store's
            `provenance`); when given, a model trained on other settings is refused.

    Returns:
        A `BestModel` with `class_names`, `predict_proba(features)` and `keras_head`.

    Raises:
        StoreError: not a grid-search run folder, a checksum or provenance mismatch, an
            unsafe file name or format, or untrusted types in the skops file.
    """
    run_dir = Path(run_dir)
    sidecar_path = run_dir / SIDECAR
    for path in (run_dir / "run.json", sidecar_path):
        require_regular_file(path, "run file", StoreError, "pass the folder grid-search printed.")
    if not (run_dir / "run.json").is_file() or not sidecar_path.is_file():
        raise StoreError(f"{run_dir} is not a grid-search run folder (no run.json or {SIDECAR}); "
                         "pass the folder grid-search printed as its last line.")
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise StoreError(f"{run_dir}: unreadable run.json or {SIDECAR} ({exc}); run "
                         "grid-search again.") from None
    _check_run_files(run_dir, run, sidecar)
    if run.get("kind") != "grid_search":
        raise StoreError(f"{run_dir} is a {run.get('kind')!r} run, not a grid-search one.")
    kind, files = sidecar.get("format"), sidecar.get("files") or {}
    if kind not in FORMATS or set(files) != set(FORMATS[kind]):
        raise StoreError(f"{sidecar_path}: format {kind!r} with files {sorted(files)} is not one "
                         f"this version loads ({', '.join(FORMATS)} with "
                         f"{SKOPS_FILE}/{KERAS_FILE}); pickle and joblib files are never loaded.")
    for name, digest in files.items():
        path = run_dir / name
        require_regular_file(path, "run file", StoreError, "run grid-search again.")
        if not path.is_file() or file_sha256(path) != digest:
            raise StoreError(f"{path} does not match the checksum in {SIDECAR} (changed or "
                             "replaced after the search); refusing to load it. Run grid-search "
                             "again.")
    if provenance is not None:
        check_provenance(sidecar.get("provenance") or {}, provenance, str(run_dir))
    pipeline = None
    if SKOPS_FILE in files:
        import skops.io as sio

        trusted = _check_skops_types(run_dir / SKOPS_FILE)
        pipeline = sio.load(run_dir / SKOPS_FILE, trusted=trusted)
    head = None
    if KERAS_FILE in files:
        import keras

        try:
            head = keras.saving.load_model(run_dir / KERAS_FILE, compile=False, safe_mode=True)
        except Exception as exc:  # safe mode refuses lambdas and unknown classes
            raise StoreError(f"{run_dir / KERAS_FILE} cannot be loaded in Keras' safe mode "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}).") from None
    return BestModel(sidecar, pipeline, head)


def run_kind(run_dir) -> str | None:
    """The `kind` run.json records ("grid_search", "keras_head"), or None when the folder has
    no readable run.json object."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("kind") if isinstance(info, dict) else None


def _check_run_files(run_dir: Path, run, sidecar) -> None:
    """run.json and the sidecar are the objects grid-search writes (else: modified)."""
    modified = ("the run folder was modified after grid-search wrote it or is not one of ours; "
                "run grid-search again.")
    for name, doc in (("run.json", run), (SIDECAR, sidecar)):
        if not isinstance(doc, dict):
            raise StoreError(f"{run_dir / name} holds a JSON {type(doc).__name__}, not a run's "
                             f"description; {modified}")
    names, classes = sidecar.get("class_names"), sidecar.get("classes")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or \
            not isinstance(classes, list) or \
            not all(isinstance(c, int) and 0 <= c < len(names) for c in classes):
        raise StoreError(f"{run_dir / SIDECAR} has no valid class_names and classes; {modified}")
    if not isinstance(sidecar.get("files"), (dict, type(None))) or \
            not isinstance(sidecar.get("provenance"), (dict, type(None))):
        raise StoreError(f"{run_dir / SIDECAR}: files and provenance must be objects; "
                         f"{modified}")


class BestModel:
    """A loaded best model: the pipeline (and Keras head), with the class names of its store."""

    def __init__(self, sidecar: dict, pipeline, head):
        self.sidecar = sidecar
        self.class_names = list(sidecar["class_names"])
        self.classes = np.asarray(sidecar["classes"], dtype=np.int64)  # columns -> class index
        self.name, self.family = sidecar.get("model"), sidecar.get("family")
        self.params = sidecar.get("params", {})
        self.pipeline = pipeline  # skops format: the whole pipeline; else the preprocessing
        self.head = head
        self._keras_head = None

    def _scores(self, X: np.ndarray) -> np.ndarray:
        if self.head is not None:
            if self.pipeline is not None:
                X = self.pipeline.transform(X)
            return predict_proba(self.head, np.asarray(X, dtype=np.float32))
        if hasattr(self.pipeline, "predict_proba"):
            return self.pipeline.predict_proba(X)
        # SVMs fit without probability=True give decision scores only: a softmax ranks the
        # classes like the model does, but it is not a calibrated probability.
        scores = np.asarray(self.pipeline.decision_function(X), dtype=np.float64)
        if scores.ndim == 1:
            scores = np.stack([-scores, scores], axis=1) / 2.0
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (n, K) with columns in `class_names` order (all K classes)."""
        X = np.asarray(features, dtype=np.float32)
        X = X.reshape(len(X), -1)
        probs = np.zeros((len(X), len(self.class_names)), dtype=np.float64)
        probs[:, self.classes] = self._scores(X)
        return probs

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class indices (into `class_names`)."""
        return np.argmax(self.predict_proba(features), axis=1)

    @property
    def keras_head(self):
        """A keras.Model features -> probabilities, when the model can be written as Keras
        layers exactly (the Keras head, or a linear model, behind standardize / l2_normalize /
        PCA); else None."""
        if self._keras_head is None:
            self._keras_head = to_keras_model(self) or False
        return self._keras_head or None
