"""Weights for a backbone trunk: `imagenet`, `none`, or a file the user owns.

Files: a Keras 3 `.weights.h5`, a legacy Keras 2 `.h5` (weights-only or a whole model) or a
`.keras` model. A whole model that still has its classifier top is cut down to the trunk by
copying weights layer by layer, by name, into a freshly built trunk, so the trunk's input size
(`--input-size`) does not have to match the file's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py

from pipeline.errors import PipelineError, WeightsError

KNOWN_WEIGHTS = ("imagenet", "none")
RANDOM_INIT_SEED = 0


def weights_identity(weights: str) -> str:
    """What identifies the weights in the cache key: `imagenet`, `none` or the file's sha256."""
    if weights in KNOWN_WEIGHTS:
        return weights
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {weights}. Pass --weights imagenet, "
                           "--weights none, or the path of a .weights.h5, .h5 or .keras file.")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def load_trunk(spec, weights: str, input_shape: tuple):
    """Builds `spec`'s trunk at `input_shape` with the requested weights loaded."""
    if weights == "none":
        import keras

        # Random weights must be the same random weights every run, or a resumed or updated
        # store would mix vectors of two different networks under one cache key.
        keras.utils.set_random_seed(RANDOM_INIT_SEED)
        return spec.build(None, input_shape)
    if weights == "imagenet":
        try:
            return spec.build("imagenet", input_shape)
        except PipelineError:
            raise  # e.g. an input size below the backbone's minimum: not a download problem
        except Exception as exc:  # Keras raises several types for a failed download
            raise WeightsError(
                f"could not get ImageNet weights for {spec.name} through Keras' download "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                "pass a weights file with --weights PATH (or --weights none for random weights)."
            ) from None
    path = Path(weights)
    weights_identity(weights)  # the not-found message
    trunk = spec.build(None, input_shape)
    name = path.name.lower()
    if name.endswith(".keras"):
        _copy_from_model_file(trunk, path, spec)
    elif name.endswith(".weights.h5"):
        _load_keras3_weights(trunk, path, spec)
    elif name.endswith((".h5", ".hdf5")):
        _load_legacy_h5(trunk, path, spec)
    else:
        raise WeightsError(f"unsupported weights file {path.name}: expected .weights.h5, .h5 or "
                           ".keras (or --weights imagenet / none)")
    return trunk


def _load_keras3_weights(trunk, path: Path, spec) -> None:
    try:
        trunk.load_weights(str(path))
    except Exception as exc:
        raise WeightsError(
            f"weights file {path.name} does not fit {spec.name} without its top "
            f"(include_top=False): {_first_line(exc)}. Save it from the headless model "
            f"(include_top=False), or pass the whole model as a .keras file.") from None


def _legacy_layer_names(path: Path) -> list[str] | None:
    try:
        with h5py.File(path, "r") as fh:
            group = fh["model_weights"] if "model_weights" in fh else fh
            names = group.attrs.get("layer_names")
            return None if names is None else [n.decode() if isinstance(n, bytes) else str(n)
                                               for n in names]
    except OSError as exc:
        raise WeightsError(f"weights file {path.name} is not a readable HDF5 file: "
                           f"{_first_line(exc)}") from None


def _load_legacy_h5(trunk, path: Path, spec) -> None:
    """Keras 2 files: by layer name when the names match the trunk's, else in layer order."""
    names = _legacy_layer_names(path)
    if names is None:  # not Keras 2's layout: maybe a Keras 3 weights file with a plain .h5 name
        return _load_keras3_weights(trunk, path, spec)
    weighted = [layer.name for layer in trunk.layers if layer.weights]
    missing = [n for n in weighted if n not in set(names)]
    try:
        if not missing:
            trunk.load_weights(str(path), by_name=True)
        elif len(missing) == len(weighted):  # other naming: rely on the layer order instead
            trunk.load_weights(str(path))
        else:
            raise WeightsError(
                f"weights file {path.name} has no weights for {len(missing)} layer(s) of "
                f"{spec.name}, e.g. {', '.join(missing[:3])}; it was saved from another model.")
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"weights file {path.name} does not fit {spec.name}: "
                           f"{_first_line(exc)}") from None


def _copy_from_model_file(trunk, path: Path, spec) -> None:
    import keras

    try:
        source = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise WeightsError(f"cannot load model file {path.name}: {_first_line(exc)}") from None
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in trunk.layers:
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        if other is None:
            raise WeightsError(f"model file {path.name} has no layer '{layer.name}' that "
                               f"{spec.name}'s trunk needs; it was saved from another model.")
        mine = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(w.shape) for w in other.weights]
        if mine != theirs:
            raise WeightsError(f"layer '{layer.name}' in {path.name} has weight shapes {theirs}, "
                               f"{spec.name} expects {mine}.")
        layer.set_weights(other.get_weights())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
