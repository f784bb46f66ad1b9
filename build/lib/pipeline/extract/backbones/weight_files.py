"""Reads the weighted layers of a weights file in the file's own order, without loading them.

Three layouts, one result: a list of `FileLayer`s that `weights.py` matches against a trunk.
- Legacy Keras 2 `.h5` (weights-only or a whole model): layer names in the `layer_names` order;
  a nested model (a fine-tuned `Sequential([base, Flatten, Dense])`) is opened up into its
  layers, named by their weight paths (`block1_conv1/kernel`).
- Keras 3 `.weights.h5`: layers are stored under Keras' storage names (`conv2d_3`: class name
  and a counter per class, in the model's layer order), so the file orders layers only within a
  class; `FileLayer.lane` says which ordering a layer belongs to.
- `.keras`: loaded in Keras' safe mode, nested models opened up, layers in the model's order.

Only what is read here decides whether a file fits, so Keras' own loaders (which skip extra or
missing layers with at most a warning) never decide it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from pipeline.errors import WeightsError


@dataclass
class FileLayer:
    """One weighted layer of a file.

    Attributes:
        name: the layer's name (legacy `.h5`, `.keras`) or Keras 3 storage name (`.weights.h5`).
        shapes: the shapes of its arrays, in the layer's weight order.
        load: returns the arrays.
        lane: layers of one lane are ordered by `position`; "" for files with one global order.
        position: the layer's place in its lane.
    """

    name: str
    shapes: list
    load: Callable[[], list]
    lane: str = ""
    position: int = 0


def storage_names(model) -> list:
    """Keras 3's storage name of each of `model.layers` (`conv2d`, `conv2d_1`, ...)."""
    used: dict[str, int] = {}
    names = []
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        used[base] = used.get(base, -1) + 1
        names.append(base if used[base] == 0 else f"{base}_{used[base]}")
    return names


def _snake_case(name: str) -> str:
    # The rule Keras uses to name what it stores (keras.src.utils.naming.to_snake_case).
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read_legacy_h5(path: Path) -> list[FileLayer] | None:
    """Keras 2's layout, or None when the file does not have it (a Keras 3 file named .h5)."""
    with _open_h5(path) as fh:
        group = fh["model_weights"] if "model_weights" in fh else fh
        names = group.attrs.get("layer_names")
        if names is None:
            return None
        layers = []
        for layer_name in (_text(n) for n in names):
            weight_names = [_text(w) for w in group[layer_name].attrs.get("weight_names", [])]
            by_owner: dict[str, list] = {}
            for weight in weight_names:  # "block1_conv1/kernel:0": owner block1_conv1
                parts = weight.split("/")
                by_owner.setdefault(parts[-2] if len(parts) > 1 else layer_name, []).append(weight)
            if len(by_owner) == 1:  # one layer (its weights may carry a model prefix)
                by_owner = {layer_name: weight_names}
            for owner, weights in by_owner.items():  # several owners: a nested model, opened up
                shapes = [tuple(group[layer_name][w].shape) for w in weights]
                layers.append(FileLayer(owner, shapes, _h5_loader(path, group.name, layer_name,
                                                                   weights),
                                        position=len(layers)))
        return layers


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"weights file {path.name} is not a readable HDF5 file: "
                           f"{_first_line(exc)}") from None


def _h5_loader(path: Path, group: str, layer: str, weights: list):
    def load():
        with h5py.File(path, "r") as fh:
            return [np.asarray(fh[group][layer][w]) for w in weights]
    return load


def read_keras3_weights(path: Path, trunk_names: set) -> list[FileLayer]:
    """A Keras 3 `.weights.h5`: the layers of the model (or nested model) holding the trunk's."""
    with _open_h5(path) as fh:
        scopes = _layer_scopes(fh)
        if not scopes:
            raise WeightsError(f"weights file {path.name} holds no Keras layers; save it with "
                               "model.save_weights() or pass a .keras model.")
        # The scope holding the trunk: the model itself, or a backbone nested inside it.
        best = max(scopes, key=lambda s: len(trunk_names & set(_weighted(fh[s]))))
        layers = []
        for scope in [best] + [s for s in scopes if s != best]:
            for key, shapes in _weighted(fh[scope]).items():
                base, index = _split_counter(key)
                name = key if scope == best else f"{scope}/{key}"
                layers.append(FileLayer(name, shapes, _keras3_loader(path, f"{scope}/{key}"),
                                        lane=f"{scope}:{base}", position=index))
        return layers


def _layer_scopes(fh: h5py.File) -> list:
    """`layers` and every nested model's `.../layers` group."""
    found = []
    fh.visit(lambda name: found.append(name) if name.split("/")[-1] == "layers"
             and isinstance(fh[name], h5py.Group) else None)
    return found


def _weighted(scope: h5py.Group) -> dict:
    out = {}
    for key, group in scope.items():
        variables = group.get("vars")
        if variables is not None and len(variables):
            out[key] = [tuple(variables[str(i)].shape) for i in range(len(variables))]
    return out


def _split_counter(key: str) -> tuple:
    match = re.fullmatch(r"(.*)_(\d+)", key)
    return (match.group(1), int(match.group(2))) if match else (key, 0)


def _keras3_loader(path: Path, group: str):
    def load():
        with h5py.File(path, "r") as fh:
            variables = fh[group]["vars"]
            return [np.asarray(variables[str(i)]) for i in range(len(variables))]
    return load


def read_keras_model(path: Path) -> list[FileLayer]:
    """A `.keras` model (safe mode), nested models opened up, in the model's layer order."""
    import keras

    try:
        with warnings.catch_warnings():
            # Keras keeps freshly initialised weights for layers it cannot find in the file
            # and only warns: here that is an error, never a warning a user may miss.
            warnings.filterwarnings("error", message=".*freshly-initialized.*")
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise WeightsError(f"cannot load model file {path.name}: {_first_line(exc)}") from None
    layers = []
    for layer in _flatten(model):
        if layer.weights:
            values = [np.asarray(w) for w in layer.weights]
            layers.append(FileLayer(layer.name, [v.shape for v in values],
                                    lambda values=values: values, position=len(layers)))
    return layers


def _flatten(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model: its own layers
            yield from _flatten(layer)
        else:
            yield layer


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
