"""KerasHub presets as backbones: `--backbone DIR`, `hf://...`, `kaggle://...` or a preset name.

`spec_for_preset(name)` turns a preset into a `BackboneSpec` on first use (as keras_apps.py
does for keras.applications names); keras_hub is imported only then. What the spec holds comes
from the preset itself:

- the model: `keras_hub.models.Backbone.from_preset` (a KerasHub preset directory, or a local
  Hugging Face Transformers / timm snapshot that KerasHub converts); its image tower and token
  layout from `hub_towers.py`;
- preprocessing: the preset's image converter (image size, crop or pad to aspect, interpolation,
  antialias, scale, offset); where it has none, the family's published mean and std. Every value
  is in `preprocess_name`, hence in the cache key and in `info`; the reader resizes photos with
  the converter's own Resizing layer (`image_resize`);
- weights identity (`own_weights`): a built-in name is its Kaggle handle with its version, an
  `hf://` handle its snapshot commit, a `kaggle://` handle its version, a directory the sha256 of
  its weights files; the architecture (config.json's sha256) and token layout are the `preset`
  field of the key.

Without a network a built-in name or a handle that is not in the local caches ends in one
WeightsError saying to pass a local preset directory; the download of its config is bounded
(`PIPELINE_HUB_DOWNLOAD_SECONDS`) so a hanging name lookup cannot hang the command.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import threading
import warnings
from pathlib import Path

from pipeline.config import environment_value
from pipeline.errors import BackboneError, ConfigError, PipelineError, WeightsError
from pipeline.extract.backbones import hub_towers
from pipeline.extract.backbones.spec import BackboneSpec
from pipeline.extract.sources.converter_resize import ConverterResize
from pipeline.outputs import require_regular_file

HANDLE_SCHEMES = ("hf://", "kaggle://", "modelscope://")
# Files that hold a preset's weights (KerasHub, Transformers and timm layouts, sharded too).
WEIGHT_SUFFIXES = (".weights.h5", ".weights.json", ".safetensors", ".safetensors.index.json",
                   ".bin", ".pth", ".pt", ".h5")
FIX = ("pass a local preset directory (config.json + model.weights.h5, e.g. made with "
       "save_to_preset) with --backbone DIR")
CONVERTER_FILE = "image_converter.json"


def looks_like_preset(name: str) -> bool:
    """A handle or an existing directory; built-in names are checked by `builtin_handle`."""
    return name.lower().startswith(HANDLE_SCHEMES) or Path(name).expanduser().is_dir()


def builtin_handle(name: str) -> str | None:
    """The Kaggle handle (with its version) of a built-in KerasHub preset name, or None."""
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    entry = BUILTIN_PRESETS.get(name)
    return entry["kaggle_handle"] if entry else None


def spec_for_preset(name: str) -> BackboneSpec | None:
    """The spec of the preset `name`, or None when `name` is no preset at all."""
    if not looks_like_preset(name):
        try:
            if builtin_handle(name) is None:
                return None
        except ImportError:
            return None
    folder = Path(name).expanduser()
    for entry in sorted(folder.iterdir()) if folder.is_dir() else ():  # KerasHub opens them
        require_regular_file(entry, "preset file", BackboneError, "save the preset again with "
                             "save_to_preset")
    return _spec(name)


def _bounded(what: str, name: str, call):
    """`call()` in a thread, waited for at most PIPELINE_HUB_DOWNLOAD_SECONDS; a failure or a
    hang becomes one WeightsError saying what to pass instead."""
    seconds = environment_value("PIPELINE_HUB_DOWNLOAD_SECONDS")
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 (reported below, in one line)
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)  # a hung lookup is left behind
    worker.start()
    worker.join(seconds)
    if "value" in outcome:
        return outcome["value"]
    if worker.is_alive():
        detail = f"no answer within {seconds:g} s"
    else:
        exc = outcome["error"]
        if isinstance(exc, PipelineError):
            raise exc
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0][:160] if text else 'no detail'}"
    if Path(name).expanduser().is_dir():
        raise BackboneError(f"could not {what} KerasHub preset directory {name} ({detail}); "
                            "its files are damaged or not a KerasHub preset's: save it again "
                            "with save_to_preset")
    raise WeightsError(f"could not {what} KerasHub preset '{name}' ({detail}); no network "
                       f"here, or no such preset: {FIX}.")


def _local_file(handle: str, name: str, file: str) -> str:
    from keras_hub.src.utils.preset_utils import get_file

    # The hubs' clients log each retry of a failed download; the outcome is our one line.
    # Imported first: huggingface_hub sets its loggers' level when its logging module loads.
    for module in ("huggingface_hub.file_download", "kagglehub"):
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 (a hub client that is not installed logs nothing)
            pass
    quiet = [logging.getLogger(hub) for hub in ("huggingface_hub", "kagglehub")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        return _bounded("download", name, lambda: get_file(handle, file))
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else 'no detail'}"


def _read_json(path: Path) -> dict:
    """A preset file as a JSON object ({} when it is not there); a broken one is named."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackboneError(f"{path} is not valid JSON ({exc}); save the preset again with "
                            "save_to_preset, or restore the file") from None
    if not isinstance(value, dict):
        raise BackboneError(f"{path} holds a JSON {type(value).__name__}, not the object "
                            "KerasHub writes; save the preset again with save_to_preset")
    return value


def _sha256(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _weights_version(handle: str, builtin: bool, config_path: str) -> str:
    """The identity of the preset's weights (see the module doc)."""
    if builtin or (handle.startswith("kaggle://") and handle.count("/") >= 6):
        return handle  # a built-in name's handle, or a handle, with its version
    folder = Path(config_path).parent
    if handle.startswith("hf://"):
        return f"{handle}@{folder.name}"  # Hugging Face's cache: .../snapshots/<commit>/
    if handle.startswith(("kaggle://", "modelscope://")):
        return f"{handle}/{folder.name}"  # kagglehub's cache: .../<variation>/<version>/
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES))
    if not files:
        raise WeightsError(f"preset directory {folder} holds no weights file (model.weights.h5, "
                           "model.safetensors, ...); save the preset with its weights, or pass "
                           "--weights none for random weights")
    return "sha256:" + _sha256(files)


def _converter_values(handle: str, backbone, tower) -> dict:
    """The preset's image converter as data; the family's published mean and std where the
    preset brings no scale or offset."""
    import keras_hub

    own_file = Path(handle) / CONVERTER_FILE
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(handle)
    except Exception as exc:  # no converter file, or a snapshot whose converter KerasHub lacks
        if own_file.is_file():  # a file that is there but broken is never taken for none
            raise BackboneError(f"{own_file} could not be read by KerasHub "
                                f"({_first_line(exc)}); fix it, or remove it to use the "
                                "family's published mean and std") from None
        converter = None
    images = (tower.encoder(backbone) if tower is not None else backbone).inputs[0]
    shape = tuple(images.shape[1:])
    fixed = None not in shape[:2]
    if converter is not None and converter.image_size is not None:
        size = list(converter.image_size)
        if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
            raise BackboneError(f"{CONVERTER_FILE} of preset '{handle}' gives image_size "
                                f"{size!r:.40}; it must be two whole numbers above 0 (height, "
                                "width)")
        if fixed and size != [int(shape[0]), int(shape[1])]:
            raise BackboneError(f"{CONVERTER_FILE} of preset '{handle}' resizes to "
                                f"{size[0]}x{size[1]}, but its backbone takes "
                                f"{shape[0]}x{shape[1]} images only; set image_size to "
                                f"[{shape[0]}, {shape[1]}] there")
    elif fixed:
        size = [int(shape[0]), int(shape[1])]
    else:  # a convolutional backbone of any size, and no converter to say which
        raise BackboneError(f"KerasHub preset '{handle}' fixes no image size (its backbone takes "
                            "any size and it has no image converter); save an image converter "
                            "with an image_size into the preset directory")
    values = {"image_size": [int(s) for s in size], "source": "image converter"}
    for key, default in (("crop_to_aspect_ratio", True), ("pad_to_aspect_ratio", False),
                         ("interpolation", "bilinear"), ("antialias", False)):
        values[key] = getattr(converter, key, default) if converter is not None else default
    scale = getattr(converter, "scale", None) if converter is not None else None
    offset = getattr(converter, "offset", None) if converter is not None else None
    if scale is None and offset is None:
        mean, std = tower.mean_std if tower is not None else hub_towers.IMAGENET_MEAN_STD
        scale = [1.0 / (255.0 * s) for s in std]
        offset = [-m / s for m, s in zip(mean, std)]
        values["source"] = "published mean and std (the preset's converter has none)"
    values["scale"] = _three(scale if scale is not None else 1.0)
    values["offset"] = _three(offset if offset is not None else 0.0)
    return values


def _three(value) -> list:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    return values * 3 if len(values) == 1 else values


def _affine(scale: list, offset: list):
    import numpy as np

    a, b = np.asarray(scale, np.float32), np.asarray(offset, np.float32)

    def preprocess(x):
        import keras

        return keras.ops.add(keras.ops.multiply(x, a), b)

    return preprocess


def _display_name(name: str) -> str:
    for scheme in HANDLE_SCHEMES:
        if name.lower().startswith(scheme):
            return scheme[:-3] + "-" + name[len(scheme):].strip("/").replace("/", "-")
    path = Path(name).expanduser()
    return f"hub-{path.resolve().name}" if path.is_dir() else name


@functools.lru_cache(maxsize=32)
def _spec(name: str) -> BackboneSpec:
    import keras_hub
    from keras_hub.src.utils.preset_utils import get_preset_loader

    builtin = None if looks_like_preset(name) else builtin_handle(name)
    handle = builtin or name
    local = Path(name).expanduser().is_dir()
    if local:
        handle = str(Path(name).expanduser())
        if not (Path(handle) / "config.json").is_file():
            raise BackboneError(f"{name} is a directory but not a KerasHub preset: it has no "
                                f"config.json; {FIX}")
        for file in ("config.json", CONVERTER_FILE):
            _read_json(Path(handle) / file)
    config_path = _local_file(handle, name, "config.json")
    loader = _bounded("read", name, lambda: get_preset_loader(handle))
    try:
        backbone_class = loader.check_backbone_class()
    except Exception:  # a class name KerasHub has not registered: never looked up
        named = _read_json(Path(config_path)).get("registered_name")
        raise BackboneError(f"config.json of preset '{name}' names the class {named!r:.80}, "
                            "which is not a registered KerasHub model class; the preset is "
                            "damaged or not a KerasHub preset (save it again with "
                            "save_to_preset)") from None
    class_name = backbone_class.__name__
    tower = hub_towers.tower_for(class_name)
    try:  # random weights: the architecture only, to read its shapes and token layout
        probe = keras_hub.models.Backbone.from_preset(handle, load_weights=False)
    except Exception as exc:
        raise BackboneError(f"KerasHub cannot build preset '{name}' ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    output_rank = len(probe.output.shape) if not isinstance(probe.output, dict) else 0
    any_size = None in tuple(probe.inputs[0].shape[1:3])  # built at the converter's size
    if tower is None and (output_rank != 4 or len(probe.inputs[0].shape) != 4):
        raise BackboneError(
            f"preset '{name}' is a {class_name}, which is not an image backbone this tool "
            f"reads: supported are {', '.join(sorted(hub_towers.TOWERS))} and convolutional "
            "image backbones (whose output is a feature map).")
    converter = _converter_values(handle, probe, tower)
    height, width = converter["image_size"]
    native = (height, width, 3)
    layout = hub_towers.token_layout(tower, probe) if tower is not None else \
        {"family": "convolutional", "pooled": "global pooling of the last map"}
    with open(config_path, "rb") as fh:
        config_sha = hashlib.sha256(fh.read()).hexdigest()
    identity = {"preset": {"class": class_name, "config_sha256": config_sha, **layout}}
    aliases = hub_towers.offered_layers(tower, probe)
    del probe
    display = _display_name(name)

    def own_weights(weights: str) -> str:
        if weights == "none":
            return "none"
        if weights != "imagenet":
            raise WeightsError(f"--weights {weights}: a KerasHub preset carries its own weights; "
                               "leave out --weights (or pass --weights none for random weights), "
                               "and pass the preset directory that holds the weights you want "
                               "as --backbone")
        return _weights_version(handle, builtin is not None, config_path)

    def build(weights, input_shape):
        if tuple(input_shape) != native:
            raise ConfigError(f"preset '{name}' runs at {height}x{width}, its image converter's "
                              f"size; leave out --input-size (or pass --input-size {height})")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                backbone = keras_hub.models.Backbone.from_preset(
                    handle, load_weights=weights is not None,
                    **({"image_shape": native} if any_size else {}))
                # Keras keeps fresh random weights for what it cannot find, with a warning
                # only: here that is a refusal.
                partial = [w for w in caught if "freshly-initialized" in str(w.message)]
                if partial:
                    raise ValueError(str(partial[0].message))
            except Exception as exc:
                if local:
                    raise WeightsError(
                        f"the weights in {name} do not fit the model its config.json describes "
                        f"({_first_line(exc)}); save the preset again with save_to_preset from "
                        "the model those weights belong to") from None
                raise WeightsError(f"could not load the weights of KerasHub preset '{name}' "
                                   f"({_first_line(exc)}); {FIX}") from None
        for w in caught:  # anything else Keras said while loading a preset that fits
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return hub_towers.feature_trunk(backbone, tower)

    return BackboneSpec(
        name=display,
        build=build,
        preprocess=_affine(converter["scale"], converter["offset"]),
        preprocess_name="keras_hub image converter " + json.dumps(converter, sort_keys=True),
        input_shape=native,
        layer_aliases=aliases,
        pooled_from=hub_towers.POOLED if tower is not None else None,
        notes=f"KerasHub {class_name} ({layout['family']}): pooled = {layout['pooled']}",
        own_weights=own_weights,
        identity=identity,
        image_resize=ConverterResize.from_values(converter),
    )
