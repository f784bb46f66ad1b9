"""The artifact formats `export --format` writes, each with the runtime that loads it back.

A format is a registered object: how to write an end-to-end Keras model as that artifact, which
files make up the artifact, and how to load it in its own runtime (onnxruntime, the OpenVINO
runtime, the LiteRT interpreter, TensorFlow) as a function from a uint8 batch to
probabilities. The converters and runtimes are imported only inside these methods, so asking for
one format never imports another's packages.

Usage:
    fmt = get_format("onnx")
    fmt.check_available()              # before any work: a clear refusal when a package is missing
    fmt.write(model, path)             # the Keras model's own `export`
    run = fmt.load(path); probs = run(uint8_batch)
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, OutputError
from pipeline.outputs import file_sha256
from pipeline.deploy.sklearn_onnx import OPSET

INSTALL_HINT = "pip install -r requirements-export.txt (or pip install .[export])"


class ExportFormat:
    """One artifact format. Subclasses set the class attributes and `load`."""

    name = ""
    file_name = ""          # the artifact's name inside its folder (RUN/export/<name>/)
    keras_format = ""       # `keras.Model.export(format=...)`
    runtime = ""            # what loads it, for model.json and messages
    requires: tuple = ()    # importable modules the converter and the runtime need
    input_dtype = "uint8"   # what the artifact takes
    takes_sklearn = False   # a scikit-learn winner can be joined into this format
    is_folder = False       # the artifact is a folder (a SavedModel)

    @property
    def default_folder(self) -> str:
        """Where under RUN/export/ the artifact goes by default: its own folder."""
        return self.name

    def check_available(self) -> None:
        """Raises ConfigError naming the missing packages, before anything is built."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"--format {self.name} needs {', '.join(missing)}, which is not "
                              f"installed here; {INSTALL_HINT}, or choose another --format.")

    def files(self, path: Path) -> list[Path]:
        """Every file or folder the artifact at `path` is made of."""
        return [path]

    def write(self, model, path: Path) -> None:
        _called_once(model)
        # Keras' exporters print what they saved; the command's stdout ends with the path only.
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(str(path), format=self.keras_format, verbose=False)

    def load(self, path: Path):
        raise NotImplementedError

    def describe_load(self, path_name: str) -> str:
        raise NotImplementedError


def _called_once(model) -> None:
    """Keras' ONNX exporter refuses a model that has never been called: call it on one input."""
    spec = model.inputs[0]
    model(np.zeros((1, *spec.shape[1:]), dtype=spec.dtype))


class KerasFormat(ExportFormat):
    name, file_name, runtime = "keras", "model.keras", "keras"
    input_dtype = "float32"  # the .keras model takes RGB values 0..255 as float32, as before
    default_folder = ""  # RUN/export/model.keras, as before

    def check_available(self) -> None:
        pass

    def write(self, model, path: Path) -> None:
        model.save(path)

    def load(self, path: Path):
        import keras

        model = keras.saving.load_model(path, safe_mode=True)
        return lambda x: np.asarray(model.predict(np.asarray(x, np.float32), batch_size=len(x),
                                                  verbose=0))

    def describe_load(self, path_name: str) -> str:
        return f"keras.saving.load_model('{path_name}', safe_mode=True)"


class OnnxFormat(ExportFormat):
    name, file_name, keras_format, runtime = "onnx", "model.onnx", "onnx", "onnxruntime"
    requires = ("tf2onnx", "onnx", "onnxruntime")
    takes_sklearn = True

    def write(self, model, path: Path) -> None:
        """Through a frozen TensorFlow graph: Keras 3.15's `export(format="onnx")` leaves the
        constants a layer captures (a Normalization layer's mean and variance, which every
        standardizing head holds) as graph inputs the caller would have to feed."""
        import tensorflow as tf

        if not all(isinstance(w.value, tf.Variable) for w in model.weights):
            # Another Keras backend holds the weights: its graph is not TensorFlow's to freeze.
            _called_once(model)
            with contextlib.redirect_stdout(io.StringIO()):
                model.export(str(path), format="onnx", verbose=False, opset_version=OPSET)
            return
        import tf2onnx
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2)

        spec = model.inputs[0]
        signature = [tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name="rgb")]
        function = tf.function(lambda x: model(x, training=False), input_signature=signature)
        # tf2onnx calls TensorFlow v1 graph functions, which log deprecation notices meant for
        # tf2onnx's authors: the export's own lines are what the user reads.
        tf_log = logging.getLogger("tensorflow")
        level = tf_log.level
        tf_log.setLevel(logging.ERROR)
        try:
            frozen = convert_variables_to_constants_v2(function.get_concrete_function())
            onnx_model, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
                output_names=[t.name for t in frozen.outputs], opset=OPSET,
                custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])})
        finally:
            tf_log.setLevel(level)
        path.write_bytes(onnx_model.SerializeToString())

    def load(self, path: Path):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.asarray(x, np.uint8)})[0]

    def describe_load(self, path_name: str) -> str:
        return (f"onnxruntime.InferenceSession('{path_name}').run(None, {{'rgb': uint8_batch}})"
                "[0]")


def _erfc_as_one_minus_erf(ctx, node, name, args) -> None:
    """TensorFlow's Erfc (the exact GELU of KerasHub's ViT-family presets) has no ONNX op and
    no tf2onnx converter: written as 1 - Erf(x), ONNX's own Erf (an absolute error near
    float32's epsilon, where erfc is tiny)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype))
    node.type, node.domain = "Sub", ""
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


class OpenVinoFormat(ExportFormat):
    name, file_name, keras_format, runtime = "openvino", "model.xml", "openvino", "openvino"
    requires = ("openvino",)

    def files(self, path: Path) -> list[Path]:
        return [path, path.with_suffix(".bin")]

    def load(self, path: Path):
        import openvino

        # f32: on CPUs with bf16 units OpenVINO would otherwise compute in bf16 (about 1e-2 off).
        compiled = openvino.Core().compile_model(str(path), "CPU",
                                                 {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: np.asarray(compiled(np.asarray(x, np.uint8))[0])

    def describe_load(self, path_name: str) -> str:
        return (f"openvino.Core().compile_model('{path_name}', 'CPU', "
                "{'INFERENCE_PRECISION_HINT': 'f32'})(uint8_batch)[0]")


class LiteRtFormat(ExportFormat):
    name, file_name, keras_format, runtime = "litert", "model.tflite", "litert", "ai_edge_litert"
    requires = ("tensorflow", "ai_edge_litert")

    def load(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        index = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]

        def run(x):
            x = np.asarray(x, np.uint8)
            interpreter.resize_tensor_input(index, x.shape)  # the batch axis is free
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            return np.array(interpreter.get_tensor(out))

        return run

    def describe_load(self, path_name: str) -> str:
        return (f"ai_edge_litert.interpreter.Interpreter(model_path='{path_name}'): "
                "resize_tensor_input to the batch, allocate_tensors, set_tensor, invoke")


class SavedModelFormat(ExportFormat):
    name, file_name, keras_format = "saved_model", "model", "tf_saved_model"
    runtime = "tensorflow"
    requires = ("tensorflow",)
    is_folder = True

    def load(self, path: Path):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda x: loaded.serve(tf.constant(np.asarray(x, np.uint8))).numpy()

    def describe_load(self, path_name: str) -> str:
        return f"tf.saved_model.load('{path_name}').serve(uint8_batch)"


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat, *, overwrite: bool = False) -> ExportFormat:
    """Makes `fmt` available as `export --format fmt.name`."""
    if fmt.name in FORMATS and not overwrite:
        raise ValueError(f"an export format named {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


for _fmt in (KerasFormat(), OnnxFormat(), OpenVinoFormat(), LiteRtFormat(), SavedModelFormat()):
    register_format(_fmt)

FORMAT_NAMES = tuple(FORMATS)


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; received: {name}")
    return FORMATS[name]


def contract_path(path: Path, format_name: str) -> Path:
    """The model.json of the artifact at `path`: `<stem>.<format>.json` (model.keras.json,
    model.onnx.json, served.saved_model.json), so two formats exported to one stem never share
    one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{format_name}.json")


def _entries(fmt: ExportFormat, path: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders) the artifact at `path` is made of now: a folder artifact's files and
    subfolders one by one; a link counts as a file and is never followed."""
    files, folders = [], []
    for part in fmt.files(Path(path)):
        if part.is_dir() and not part.is_symlink():
            folders.append(part)
            for folder, dirs, names in os.walk(part):
                for name in dirs:
                    entry = Path(folder) / name
                    (files if entry.is_symlink() else folders).append(entry)
                files += [Path(folder) / name for name in names]
        elif part.exists() or part.is_symlink():
            files.append(part)
    return sorted(files), sorted(folders)


def written_files(fmt: ExportFormat, path: Path) -> dict:
    """What model.json records of the artifact at `path`, so a later export replaces exactly
    that: `files` {path relative to the artifact's folder: sha256} and its `folders`."""
    path = Path(path)
    files, folders = _entries(fmt, path)
    return {"files": {f.relative_to(path.parent).as_posix(): file_sha256(f) for f in files},
            "folders": [f.relative_to(path.parent).as_posix() for f in folders]}


def check_earlier_export(fmt: ExportFormat, path: Path) -> list[Path]:
    """Refuses an artifact path holding anything an earlier export did not write: every file
    and folder there must be one its model.json lists (a file with the sha256 recorded).
    Exports made before model.json had the format in its name and a file list (`model.json`
    beside the artifact, naming it) are recognised by time: nothing of theirs is newer than
    that model.json.

    Returns:
        The older-layout model.json to remove once the artifact is replaced (or none).

    Raises:
        OutputError: naming what is not the tool's and what to pass instead.
    """
    path = Path(path)
    advice = "so nothing was changed; pass --out with a new path for the exported model."
    for part in fmt.files(path):
        if part.is_symlink() or (part.is_dir() != fmt.is_folder and part.exists()):
            what = "a folder" if part.is_dir() else "a file"
            raise OutputError(f"--out {part} is {what} this tool did not write, {advice}")
    sidecar, older = contract_path(path, fmt.name), path.with_suffix(".json")
    record = _read_json(sidecar)
    if sidecar.exists() and not (record.get("model") == path.name and
                                 record.get("format") == fmt.name and
                                 isinstance(record.get("files"), dict)):
        raise OutputError(f"--out {sidecar} is a file this tool did not write, {advice}")
    earlier = _read_json(older)
    legacy = not sidecar.exists() and earlier.get("model") == path.name and \
        earlier.get("format", fmt.name) == fmt.name and "files" not in earlier and \
        all(k in earlier for k in ("load", "vector_key"))
    recorded = record.get("files") or {}
    listed = record.get("folders")
    recorded_folders = {f for f in listed if isinstance(f, str)} if isinstance(listed, list) \
        else set()
    files, folders = _entries(fmt, path)
    for entry in files + folders:
        name = entry.relative_to(path.parent).as_posix()
        if legacy:
            ours = not entry.is_symlink() and entry.stat().st_mtime <= older.stat().st_mtime
        elif entry in folders:
            ours = name in recorded_folders
        else:
            ours = entry.is_file() and not entry.is_symlink() and \
                recorded.get(name) == file_sha256(entry)
        if not ours:
            kind = "folder" if entry in folders else "file"
            where = f"is a {kind}" if entry == path else f"holds {name}, a {kind}"
            raise OutputError(f"--out {path} {where} this tool did not write (or changed since "
                              f"an earlier export wrote it), {advice}")
    return [older] if legacy else []


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
