"""Weights pickled as nested dicts of numpy arrays (a Flax checkpoint), read without trusting it.

`pickle.load` runs whatever the file names: a weights file found online could call `os.system`
on load. `SafeArrayUnpickler` builds only numpy arrays (of plain, non-object dtypes), dtypes and
the containers pickle makes itself (dict, list, tuple, str, numbers); any other class or
function named in the file is refused, so nothing in the file ever runs. A file cannot make
the reader hang or exhaust memory either: its arrays may hold no more bytes than the file does
(checked before numpy allocates), and the tree is walked once per object, refusing an object
reached from two places (a "billion laughs" of shared dicts, a cycle) or nested deeper than any
checkpoint is.

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
# Deeper nesting than any checkpoint has (a Flax tree is about six levels deep).
MAX_DEPTH = 32


def _numpy_core():
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray
    return multiarray


class _Budget:
    """Bytes the file's arrays may hold in all: the file's own size, since each array's data
    is in the file once. Charged before anything is allocated, so a file declaring more (a
    huge shape, many arrays viewing one block of bytes) is refused for the cost of its bytes."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def charge(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise pickle.UnpicklingError(
                f"its arrays declare at least {self.used:,} bytes, more than the file holds "
                f"({self.limit:,} bytes)")


class _PendingArray:
    """What `_reconstruct` gives: numpy builds an empty array and then sets its data
    (`__setstate__`); the data is checked against the budget before numpy sees it."""

    def __init__(self, budget: _Budget):
        self.budget, self.array = budget, None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array state numpy does not write")
        shape, dtype, raw = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise pickle.UnpicklingError("only arrays of numeric dtypes are allowed")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0
                                                   for n in shape):
            raise pickle.UnpicklingError(f"an array of shape {shape!r:.60}")
        if not isinstance(raw, (bytes, str)):
            raise pickle.UnpicklingError("only raw bytes of numeric arrays are allowed")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if len(raw) != nbytes:
            raise pickle.UnpicklingError(f"an array of shape {shape!r:.60} with {len(raw):,} "
                                         f"bytes of data for {nbytes:,}")
        self.budget.charge(nbytes)
        array = _numpy_core()._reconstruct(np.ndarray, (0,), b"b")
        array.__setstate__(state)  # numpy's own: checks the data's length, then uses it
        self.array = array


def _dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:  # an object array would unpickle arbitrary objects as its items
        raise pickle.UnpicklingError(f"arrays of dtype {dtype} are not allowed")
    return dtype


def _scalar(dtype, data=None):
    if dtype.hasobject:
        raise pickle.UnpicklingError("object scalars are not allowed")
    return _numpy_core().scalar(dtype, data)


class SafeArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dtypes and plain containers, nothing else,
    and whose arrays hold at most `budget` bytes in all (see `_Budget`)."""

    def __init__(self, file, budget: int):
        super().__init__(file)
        self.budget = _Budget(budget)
        # (module, name) a numpy array pickle names -> what is built instead (numpy 1 and 2).
        self.allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype,
                        ("_codecs", "encode"): self._latin1_bytes}
        for core in ("numpy.core", "numpy._core"):
            self.allowed[(f"{core}.multiarray", "_reconstruct")] = self._reconstruct
            self.allowed[(f"{core}.multiarray", "scalar")] = _scalar
            self.allowed[(f"{core}.numeric", "_frombuffer")] = self._frombuffer

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, and only numpy arrays and plain containers are "
                "read from a weights pickle") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds persistent references (not a plain pickle)")

    def _reconstruct(self, subtype, shape, dtype):
        # numpy's own pickles construct an empty array here and set its data after.
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"array subtype {subtype!r} is not allowed")
        if not isinstance(shape, tuple) or any(not isinstance(n, int) for n in shape) or \
                0 not in shape:
            raise pickle.UnpicklingError(f"it declares an array of shape {shape!r:.60} before "
                                         "its data (numpy's own pickles never do)")
        return _PendingArray(self.budget)

    def _frombuffer(self, buffer, dtype, shape, order):
        # Protocol 5 spells an array as numeric._frombuffer(raw bytes, dtype, shape, order).
        dtype = np.dtype(dtype)
        if dtype.hasobject or not isinstance(buffer, (bytes, bytearray, memoryview)):
            raise pickle.UnpicklingError("only raw bytes of numeric arrays are allowed")
        self.budget.charge(len(buffer))
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)

    def _latin1_bytes(self, text, encoding="latin1"):
        # Protocols 0-2 spell an array's bytes as _codecs.encode(text, "latin1"): only that.
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 array "
                                         "bytes")
        self.budget.charge(len(text))
        return text.encode("latin1")


def load_array_pickle(path: Path):
    """The nested dicts of arrays in `path`.

    Raises:
        WeightsError: the file names anything but arrays and containers, its arrays declare
            more bytes than it holds, it refers to one object from two places (or in a
            cycle), nests deeper than MAX_DEPTH, or is no pickle.
    """
    name = Path(path).name
    try:
        data = Path(path).read_bytes()
        tree = SafeArrayUnpickler(io.BytesIO(data), budget=len(data)).load()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {name}: {exc.strerror or exc}") from None
    except Exception as exc:  # any unpickling failure: the file is refused, never half-read
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"weights file {name} was refused: {detail}. Pass a pickle of "
                           "numpy arrays only (a Flax checkpoint), or a .weights.h5 file.") \
            from None
    return _checked_tree(tree, name)


def _checked_tree(tree, name: str) -> dict:
    """`tree` with its arrays in place, walked once per object (iteratively: no recursion
    limit to reach), refusing what a checkpoint never holds."""
    if not isinstance(tree, dict):
        raise WeightsError(f"weights file {name} holds a {type(tree).__name__}; expected nested "
                           "dicts of numpy arrays (a Flax checkpoint)")
    seen: dict[int, str] = {id(tree): "/"}
    stack = [(tree, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise WeightsError(f"weights file {name} nests dicts deeper than {MAX_DEPTH} levels "
                               f"(at '{where[:120]}...'); a checkpoint is a few levels deep")
        for key, value in node.items():
            if not isinstance(key, str):
                raise WeightsError(f"weights file {name} has a non-text key {key!r:.40} at "
                                   f"'{where or '/'}'; expected nested dicts of arrays")
            place = f"{where}/{key}"
            if not isinstance(value, (dict, np.ndarray, _PendingArray)):
                raise WeightsError(f"weights file {name} holds a {type(value).__name__} at "
                                   f"'{place}'; expected nested dicts of numpy arrays (a Flax "
                                   "checkpoint)")
            if id(value) in seen:  # shared: walking it again could repeat 2**depth times
                raise WeightsError(
                    f"weights file {name} refers to one object from two places "
                    f"('{seen[id(value)][:80]}' and '{place[:80]}'); in a checkpoint each "
                    "dict and array has one place, so the file is refused")
            seen[id(value)] = place
            if isinstance(value, _PendingArray):
                if value.array is None:
                    raise WeightsError(f"weights file {name} holds an array without data at "
                                       f"'{place}'")
                node[key] = value.array
            elif isinstance(value, dict):
                stack.append((value, place, depth + 1))
    return tree


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
        stored = [(var, variables[var]) for var in order]
        # Shapes only: the arrays are converted once the layer is known to fit the trunk.
        layers.append(FileLayer(module_path, [_keras_shape(var, a) for var, a in stored],
                                lambda stored=stored: [_as_keras(var, a) for var, a in stored],
                                position=len(layers)))
    return layers


def _leaves(node: dict, path: tuple):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, path + (key,))
        else:
            yield "_".join(part.replace("/", "_") for part in path), key, value


def _keras_shape(var: str, array: np.ndarray) -> tuple:
    return (array.size,) if var in _VECTORS else array.shape


def _as_keras(var: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    return array.reshape(-1) if var in _VECTORS else array
