"""Weights for a backbone trunk: `imagenet`, `none`, or a file the user owns.

Files: a Keras 3 `.weights.h5`, a legacy Keras 2 `.h5` (weights-only or a whole model), a
`.keras` model, or a Flax checkpoint pickle (`.ckpt`, read by a restricted unpickler). Weights are copied layer by layer into a freshly built trunk, so a whole model
that still has its classifier top is cut down to the trunk and the trunk's input size
(`--input-size`) does not have to match the file's. A file from another architecture is refused
(`match_layers` states the rule); Keras' own loaders, which skip what does not match, are not
used for files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, WeightsError
from pipeline.outputs import require_regular_file
from pipeline.extract.backbones import pickled_weights, weight_files

KNOWN_WEIGHTS = ("imagenet", "none")
RANDOM_INIT_SEED = 0


def weights_identity(weights: str) -> str:
    """What identifies the weights in the cache key: `imagenet`, `none` or the file's sha256."""
    if weights in KNOWN_WEIGHTS:
        return weights
    path = Path(weights)
    require_regular_file(path, "weights file", WeightsError, "pass --weights with a file saved "
                         "on disk.")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {weights}. Pass --weights imagenet, "
                           "--weights none, or the path of a .weights.h5, .h5 or .keras file.")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def identity_for(spec, weights: str) -> str:
    """The weights' identity in the cache key for `spec`: its own (a KerasHub preset's
    weights) where it carries them, else `weights_identity`."""
    if spec.own_weights is not None:
        return spec.own_weights(weights)
    return weights_identity(weights)


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
                "pass a weights file with --weights PATH (where to get one for each backbone: "
                "docs/weights.md), or --weights none for random weights."
            ) from None
    path = Path(weights)
    weights_identity(weights)  # the not-found message
    trunk = spec.build(None, input_shape)
    name = path.name.lower()
    keys, by_order = [layer.name for layer in trunk.layers], True
    if name.endswith(".keras"):
        file_layers = weight_files.read_keras_model(path)
    elif name.endswith((".h5", ".hdf5")):
        file_layers = None if name.endswith(".weights.h5") else weight_files.read_legacy_h5(path)
        if file_layers is None:  # Keras 3's layout (also when named .h5): storage names
            keys, by_order = weight_files.storage_names(trunk), False
            file_layers = weight_files.read_keras3_weights(path, set(keys))
    elif name.endswith(pickled_weights.PICKLE_SUFFIXES):  # a Flax checkpoint, read safely
        file_layers = pickled_weights.read_flax_variables(path)
    else:
        raise WeightsError(f"unsupported weights file {path.name}: expected .weights.h5, .h5, "
                           ".keras or a Flax checkpoint .ckpt (or --weights imagenet / none)")
    wanted = [(layer, key) for layer, key in zip(trunk.layers, keys) if layer.weights]
    for layer, source in match_layers(wanted, file_layers, path.name, spec.name, by_order):
        arrays = source.load()
        _refuse_non_finite(arrays, layer, source.name, path.name)
        layer.set_weights(arrays)
    return trunk


def _refuse_non_finite(arrays: list, layer, stored_as: str, file_name: str) -> None:
    """NaN or inf in a weight would not always reach the vectors as NaN: after a BatchNorm or a
    max they can come out finite and the same for every input. So a file holding them is
    refused here, naming the layer, before anything is extracted."""
    for weight, array in zip(layer.weights, arrays):
        values = np.asarray(array)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            raise WeightsError(
                f"weights file {file_name} holds NaN or inf in layer "
                f"'{_label(layer, stored_as)}' ({bad} of {values.size} values of its "
                f"{weight.name}); the file is damaged or was saved from a training run that "
                "diverged. Pass an intact weights file (--weights).")


def match_layers(wanted: list, file_layers: list, file_name: str, arch: str,
                 by_order: bool = True) -> list:
    """Pairs every weighted trunk layer with the file layer that holds its weights.

    The rule: every weighted layer of the trunk receives weights (by name when the file has all
    the trunk's names, else -- legacy files of another naming -- in order), and the file may hold
    other layers only after the trunk's layers in the file's own order (a classifier top such as
    `fc1`, `predictions` or a fine-tuned `nfc8`). Anything else means the file was saved from
    another architecture (VGG19 into vgg16, ResNet101 into resnet50).

    Args:
        wanted: (trunk layer, the name the file would know it by) of each weighted trunk layer.
        file_layers: the file's weighted layers (`weight_files.FileLayer`), in the file's order.
        file_name, arch: for messages.
        by_order: whether a file sharing no names with the trunk may be matched in order.

    Returns:
        (trunk layer, FileLayer) pairs.

    Raises:
        WeightsError: naming the first layer that does not belong, and both layer counts.
    """
    counts = (f"the file holds {len(file_layers)} weighted layers, {arch}'s trunk "
              f"{len(wanted)}")
    index = {layer.name: i for i, layer in enumerate(file_layers)}
    present = [key for _, key in wanted if key in index]
    if len(present) == len(wanted):
        pairs = [(layer, file_layers[index[key]]) for layer, key in wanted]
        matched = {key for _, key in wanted}
        last = {}  # per lane: the position of the trunk's last layer in the file
        for _, source in pairs:
            last[source.lane] = max(last.get(source.lane, -1), source.position)
        for layer in file_layers:
            if layer.name not in matched and layer.position < last.get(layer.lane, -1):
                raise WeightsError(
                    f"weights file {file_name} was saved from another architecture: its layer "
                    f"'{layer.name}' sits among the layers of {arch}'s trunk, which has no such "
                    f"layer ({counts}). Pass the weights of {arch} itself.")
    elif present or not by_order:
        layer, key = next((layer, key) for layer, key in wanted if key not in index)
        raise WeightsError(
            f"weights file {file_name} does not fit {arch}: it has no weights for the trunk's "
            f"layer '{_label(layer, key)}' ({counts}); it was saved from another model.")
    elif len(file_layers) < len(wanted):
        raise WeightsError(
            f"weights file {file_name} does not fit {arch}: {counts}, and no layer names in "
            f"common, so not every trunk layer can receive weights.")
    else:  # no name in common: a legacy file of another naming, matched in layer order
        pairs = [(layer, source) for (layer, _), source in zip(wanted, file_layers)]
    for layer, source in pairs:
        mine = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(s) for s in source.shapes]
        if mine != theirs:
            raise WeightsError(
                f"weights file {file_name} does not fit {arch}: its layer "
                f"'{_label(layer, source.name)}' should have weight shapes {mine}, the file "
                f"holds {theirs} ({counts}).")
    return pairs


def _label(layer, key: str) -> str:
    return layer.name if key == layer.name else f"{layer.name}' (stored as '{key}"
