"""Weights pickled as nested dicts of numpy arrays (a Flax checkpoint), read without trusting it.

`pickle.load` runs whatever the file names: a weights file found online could call `os.system`
on load. `SafeArrayUnpickler` builds only numpy arrays (of plain, non-object dtypes), dtypes and
the containers pickle makes itself (dict, list, tuple, str, numbers); any other class or
function named in the file is refused, so nothing in the file ever runs.

A Flax (linen) checkpoint holds one tree per collection, e.g. `params` and `batch_stats`:
`params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel`. `read_flax_variables` turns it into
the `FileLayer`s that `weights.match_layers` pairs with a Keras trunk: one layer per Flax module,
named by its module path joined with `_` (`Mixed_3b_Branch_0_Conv3d_0a_1x1_Conv_0`), its arrays
in Keras' order (kernel, scale, bias, moving mean, moving variance).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from pipeline.errors import WeightsError
from pipeline.extract.backbones.weight_files import FileLayer

PICKLE_SUFFIXES = (".ckpt", ".pkl", ".pickle")
# Flax variable names in the order Keras keeps the same weights (Conv: kernel, bias;
# BatchNormalization: gamma, beta, moving_mean, moving_variance).
_KERAS_ORDER = ("kernel", "scale", "bias", "mean", "var")
# Per-channel vectors; Flax keeps BatchNorm statistics broadcastable, e.g. (1, 1, 1, 1, C).
_VECTORS = ("scale", "bias", "mean", "var")


def _numpy_core():
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray
    return multiarray


def _reconstruct(subtype, shape, dtype):
    # numpy's own array constructor, limited to plain ndarrays.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {subtype!r} is not allowed")
    return _numpy_core()._reconstruct(subtype, shape, dtype)


def _dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:  # an object array would unpickle arbitrary objects as its items
        raise pickle.UnpicklingError(f"arrays of dtype {dtype} are not allowed")
    return dtype


def _scalar(dtype, data=None):
    if dtype.hasobject:
        raise pickle.UnpicklingError("object scalars are not allowed")
    return _numpy_core().scalar(dtype, data)


def _frombuffer(buffer, dtype, shape, order):
    # Protocol 5 spells an array as numeric._frombuffer(raw bytes, dtype, shape, order).
    dtype = np.dtype(dtype)
    if dtype.hasobject or not isinstance(buffer, (bytes, bytearray, memoryview)):
        raise pickle.UnpicklingError("only raw bytes of numeric arrays are allowed")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _latin1_bytes(text, encoding="latin1"):
    # Protocols 0-2 spell an array's raw bytes as _codecs.encode(text, "latin1"): only that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 array bytes")
    return text.encode("latin1")


# (module, name) a numpy array pickle names -> what is built instead (numpy 1 and 2 spellings).
_ALLOWED = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _reconstruct
    _ALLOWED[(_module, "scalar")] = _scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _dtype
_ALLOWED[("_codecs", "encode")] = _latin1_bytes


class SafeArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dtypes and plain containers, nothing else."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, and only numpy arrays and plain containers are "
                "read from a weights pickle") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds persistent references (not a plain pickle)")


def load_array_pickle(path: Path):
    """The nested dicts of arrays in `path`.

    Raises:
        WeightsError: the file names anything but arrays and containers, or is no pickle.
    """
    try:
        data = Path(path).read_bytes()
        tree = SafeArrayUnpickler(io.BytesIO(data)).load()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {Path(path).name}: "
                           f"{exc.strerror or exc}") from None
    except Exception as exc:  # any unpickling failure: the file is refused, never half-read
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"weights file {Path(path).name} was refused: {detail}. Pass a "
                           "pickle of numpy arrays only (a Flax checkpoint), or a .weights.h5 "
                           "file.") from None
    _check_tree(tree, Path(path).name)
    return tree


def _check_tree(node, name: str, where: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise WeightsError(f"weights file {name} has a non-text key {key!r} at "
                                   f"'{where or '/'}'; expected nested dicts of arrays")
            _check_tree(value, name, f"{where}/{key}")
    elif not isinstance(node, np.ndarray):
        raise WeightsError(f"weights file {name} holds a {type(node).__name__} at '{where}'; "
                           "expected nested dicts of numpy arrays (a Flax checkpoint)")


def read_flax_variables(path: Path) -> list[FileLayer]:
    """The Flax modules of a checkpoint (`{collection: {module: ... {var: array}}}`), in file
    order, as `FileLayer`s named by module path.

    Raises:
        WeightsError: the file is refused (see `load_array_pickle`) or holds no arrays.
    """
    tree = load_array_pickle(path)
    modules: dict[str, dict] = {}
    for collection in tree.values():
        if not isinstance(collection, dict):
            continue
        for module_path, var, array in _leaves(collection, ()):
            modules.setdefault(module_path, {})[var] = array
    if not modules:
        raise WeightsError(f"weights file {Path(path).name} holds no arrays in collections such "
                           "as params and batch_stats; it is not a Flax checkpoint.")
    layers = []
    for module_path, variables in modules.items():
        order = sorted(variables, key=lambda v: (_KERAS_ORDER.index(v) if v in _KERAS_ORDER
                                                 else len(_KERAS_ORDER), v))
        arrays = [_as_keras(var, variables[var]) for var in order]
        layers.append(FileLayer(module_path, [a.shape for a in arrays],
                                lambda arrays=arrays: arrays, position=len(layers)))
    return layers


def _leaves(node: dict, path: tuple):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, path + (key,))
        else:
            yield "_".join(part.replace("/", "_") for part in path), key, value


def _as_keras(var: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    return array.reshape(-1) if var in _VECTORS else array
