"""Fault-table rows: damaged feature stores. Flipped bits in stored vectors, NaN and inf rows,
and root attributes or columns that are damaged. Every command that reads a store refuses it
with one `error:` line naming the store, what is wrong (the rows or the attribute) and the fix,
and the damaged file is left as it was.

The stores are real HDF5 files made with `write_store`; the damage is done on disk (bytes of a
feature chunk overwritten at the offset h5py's `get_chunk_info` gives) or with h5py.
"""

import hashlib
import shutil

import h5py
import numpy as np

from fault_case import Fault

N_ROWS = 24
FLIPPED_ROWS = (2, 5, 9)
NAN_ROWS = (3, 17)


def flip_exponent_bytes(path, rows, column=0):
    """Overwrites the high (exponent) byte of one float32 in each of `rows` with 0x7f, in the
    file itself: the values become about 1.7e38, still finite."""
    with h5py.File(path, "r") as fh:
        features = fh["features"]
        per_chunk = features.chunks[0]
        row_bytes = int(np.prod(features.shape[1:])) * features.dtype.itemsize
        offsets = []
        for row in rows:
            info = features.id.get_chunk_info_by_coord((row // per_chunk * per_chunk, 0))
            offsets.append(info.byte_offset + (row % per_chunk) * row_bytes + column * 4 + 3)
    with open(path, "r+b") as fh:
        for offset in offsets:
            fh.seek(offset)
            fh.write(b"\x7f")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(name):
    def check(files):
        assert _digest(files[name]) == files[f"{name}_digest"], f"{name} was changed"
    return check


def _with_attrs(files, root, name, **attrs):
    path = root / f"{name}.h5"
    shutil.copy(files["healthy"], path)
    with h5py.File(path, "a") as fh:
        for key, value in attrs.items():
            if value is None:
                del fh.attrs[key]
            else:
                fh.attrs[key] = value
    files[name] = path


def _nan_trunk(weights, input_shape):
    """A real Keras trunk whose vectors are NaN (the log of a negative number)."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(2, 3, strides=4, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.log(-1.0 - keras.ops.abs(t)), name="nan")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))


def _no_store_in(folder):
    def check(files):
        cache = files["root"] / folder
        assert not list(cache.glob("*.h5")) and not list(cache.glob("*.lock")), \
            list(cache.iterdir())
    return check


def build(root):
    from keras.applications import resnet50

    from conftest import write_images
    from pipeline.extract.backbones import BackboneSpec, register_backbone
    from pipeline.store.feature_store import write_store

    register_backbone(BackboneSpec(
        name="nan_trunk", build=_nan_trunk, preprocess=resnet50.preprocess_input,
        preprocess_name="keras.applications.resnet50.preprocess_input",
        input_shape=(32, 32, 3), notes="test-only trunk whose vectors are NaN"), overwrite=True)

    rng = np.random.default_rng(1)
    labels = np.arange(N_ROWS) % 2
    vectors = rng.normal(size=(N_ROWS, 4)).astype(np.float32) + labels[:, None]
    f = {"root": root, "images": write_images(root / "pets", per_class=2, size=(24, 24))}
    f["healthy"] = write_store(root / "healthy.h5", vectors, labels, class_names=["cat", "dog"])
    f["flipped"] = root / "flipped.h5"
    shutil.copy(f["healthy"], f["flipped"])
    flip_exponent_bytes(f["flipped"], FLIPPED_ROWS)
    for name, bad in (("nan", np.nan), ("inf", np.inf)):
        damaged = vectors.copy()
        damaged[list(NAN_ROWS), 1] = bad
        f[name] = write_store(root / f"{name}.h5", damaged, labels, class_names=["cat", "dog"])
    _with_attrs(f, root, "names_not_json", class_names="cat, dog")
    _with_attrs(f, root, "names_a_string", class_names='"catdog"')
    _with_attrs(f, root, "names_numbers", class_names="[1, 2]")
    _with_attrs(f, root, "provenance_missing", provenance=None)
    _with_attrs(f, root, "provenance_a_list", provenance="[1, 2]")
    _with_attrs(f, root, "provenance_not_json", provenance="{backbone")
    _with_attrs(f, root, "key_missing", cache_key=None)
    _with_attrs(f, root, "key_a_number", cache_key=7)
    f["ids_short"] = root / "ids_short.h5"
    shutil.copy(f["healthy"], f["ids_short"])
    with h5py.File(f["ids_short"], "a") as fh:
        fh["ids"].resize(N_ROWS - 3, axis=0)
    f["labels_outside"] = root / "labels_outside.h5"
    shutil.copy(f["healthy"], f["labels_outside"])
    with h5py.File(f["labels_outside"], "a") as fh:
        fh["labels"][4] = 2  # two classes: indices 0 and 1 (-1 = unlabelled)
    for name in list(f):
        if name not in ("root", "images"):
            f[f"{name}_digest"] = _digest(f[name])
    return f


def _commands(name, words, out):
    """The same damaged store given to each command that reads vectors."""
    return [
        Fault(f"info-{name}", ["info", f"{{{name}}}"], words, after=_unchanged(name)),
        Fault(f"fit-head-{name}", ["fit-head", "--store", f"{{{name}}}", "--epochs", "1",
                                   "--out", f"{{root}}/{out}"], words, after=_unchanged(name)),
        Fault(f"grid-search-{name}", ["grid-search", "--store", f"{{{name}}}", "--models",
                                      "logistic_regression", "--cv", "2", "--n-jobs", "1",
                                      "--no-progress", "--out", f"{{root}}/{out}"], words,
              after=_unchanged(name)),
        Fault(f"audit-{name}", ["audit", "--store", f"{{{name}}}", "--out",
                                f"{{root}}/{out}/audit-{name}"], words, after=_unchanged(name)),
    ]


def _attribute(name, words, command="info"):
    argv = ["info", f"{{{name}}}"] if command == "info" else \
        ["fit-head", "--store", f"{{{name}}}", "--epochs", "1", "--out", "{root}/runs-attrs"]
    return Fault(f"{command}-{name.replace('_', '-')}", argv, words, after=_unchanged(name))


CASES = [
    Fault("extract-backbone-gives-nan",
          ["extract", "--data", "{images}", "--backbone", "nan_trunk", "--weights", "none",
           "--input-size", "32", "--cache-dir", "{root}/nan-cache", "--no-progress"],
          "non-finite", after=_no_store_in("nan-cache")),
    *_commands("flipped", "checksum", "runs-flipped"),
    *_commands("nan", "non-finite", "runs-nan"),
    *_commands("inf", "non-finite", "runs-inf"),
    _attribute("names_not_json", "class_names"),
    _attribute("names_not_json", "class_names", "fit-head"),
    _attribute("names_a_string", "class_names"),
    _attribute("names_a_string", "class_names", "fit-head"),
    _attribute("names_numbers", "class_names"),
    _attribute("provenance_missing", "provenance"),
    _attribute("provenance_missing", "provenance", "fit-head"),
    _attribute("provenance_a_list", "provenance"),
    _attribute("provenance_not_json", "provenance"),
    _attribute("key_missing", "cache_key"),
    _attribute("key_a_number", "cache_key", "fit-head"),
    _attribute("ids_short", "ids"),
    _attribute("ids_short", "ids", "fit-head"),
    _attribute("labels_outside", "labels"),
    _attribute("labels_outside", "labels", "fit-head"),
]
