"""Reading a run folder's own files (run.json, head.keras) before anything trusts them.

A run folder can be edited or swapped after fit-head or grid-search wrote it: a `head.keras`
with a Lambda layer, a config naming `os.system`, an HDF5 file under the `.keras` name, a
run.json that is not a run's description, a model file copied from a sibling run, class names
reordered by hand (which would relabel every probability). run.json records the sha256 of each
model file and of the class names when the run is written; each mismatch is refused with one
line that names the file and says the folder was modified or is not one of ours; nothing in it
is executed. A run written before digests were recorded is read without them.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import ConfigError, StoreError
from pipeline.outputs import class_names_sha256, file_sha256, require_regular_file
from pipeline.store.feature_store import open_store

# What a refused run file means for the user: someone edited or swapped it after the run.
MODIFIED = ("the run folder was modified after it was written or is not one of ours; use the "
            "folder fit-head or grid-search printed, or run it again.")


def read_run_info(run_dir) -> dict:
    """`run.json` of a run folder, with a clear error when it is not one."""
    path = Path(run_dir) / "run.json"
    if not Path(run_dir).exists():
        raise ConfigError(f"run folder not found: {run_dir}; pass the folder that fit-head or "
                          "grid-search printed as its last line (with --run).")
    require_regular_file(path, "run file", fix=MODIFIED)
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no run.json); pass the folder that "
                          "fit-head or grid-search printed as its last line.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); the run folder is damaged, "
                          "run fit-head again.") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path} holds a JSON {type(info).__name__}, not a run's description; "
                          f"{MODIFIED}")
    if info.get("kind") not in ("keras_head", "grid_search"):
        raise ConfigError(f"{path} has kind {info.get('kind')!r}; expected keras_head or "
                          "grid_search.")
    names = info.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or \
            not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path} has no list of class names (class_names: {names!r:.80}); "
                          f"{MODIFIED}")
    for key in ("provenance", "store"):
        if info.get(key) is not None and not isinstance(info[key], (dict, str)[key == "store"]):
            raise ConfigError(f"{path}: {key} is a {type(info[key]).__name__}; {MODIFIED}")
    _check_digests(Path(run_dir), info)
    return info


def _check_digests(run_dir: Path, info: dict) -> None:
    """The class names and the model files are the ones the run wrote (its recorded sha256)."""
    path = run_dir / "run.json"
    recorded = info.get("class_names_sha256")
    if recorded is not None and recorded != class_names_sha256(info["class_names"]):
        raise ConfigError(f"{path}: class_names {info['class_names']!r:.120} are not the ones "
                          f"the run was written with (edited: every probability column would "
                          f"be relabelled); {MODIFIED}")
    files = info.get("file_sha256")
    if files is None:
        return
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and name and Path(name).name == name and
            isinstance(digest, str) for name, digest in files.items()):
        raise ConfigError(f"{path}: file_sha256 is not a map of file names to digests; "
                          f"{MODIFIED}")
    for name, digest in files.items():
        require_regular_file(run_dir / name, "run file", StoreError, MODIFIED)
        if not (run_dir / name).is_file() or file_sha256(run_dir / name) != digest:
            raise StoreError(f"{run_dir / name} is not the file the run wrote (its sha256 "
                             "differs from the one run.json recorded: edited, replaced or "
                             f"copied from another run); {MODIFIED}")


def same_store_as_the_run(store, info: dict) -> bool:
    """The store still holds the run's vectors of the run's files (not rebuilt since)."""
    recorded = info.get("provenance") or {}
    return store.key == info.get("store_key") and \
        store.provenance.get("source_fingerprint") == recorded.get("source_fingerprint")


def check_class_names(run_dir, info: dict, store) -> None:
    """run.json's class names are the classes of the run's store, in its order (checked only
    while `store` is still the one the run was made on: a store rebuilt since may hold other
    classes)."""
    if store is None or not same_store_as_the_run(store, info):
        return
    if list(store.class_names) != list(info["class_names"]):
        raise ConfigError(f"{Path(run_dir) / 'run.json'}: class_names {info['class_names']!r:.80} "
                          f"are not the classes of the run's store {store.path.name} "
                          f"({list(store.class_names)!r:.80}), so every probability column "
                          f"would be relabelled; {MODIFIED}")


def load_head_file(keras, path: Path):
    """A fit-head `head.keras`, loaded in Keras' safe mode after checking it is a Keras zip
    whose layers all come from Keras (a config naming `os.system` never reaches Keras)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            found = "an HDF5 file" if fh.read(8) == b"\x89HDF\r\n\x1a\n" else "not a zip file"
        raise StoreError(f"{path} is {found}, not the Keras zip fit-head writes; {MODIFIED}")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{path} has no readable config.json ({type(exc).__name__}); "
                         f"{MODIFIED}") from None
    foreign = sorted(set(_foreign_modules(config)))
    if foreign:
        raise StoreError(f"{path} names code outside Keras ({', '.join(foreign)[:120]}); it was "
                         f"not loaded. {MODIFIED[0].upper()}{MODIFIED[1:]}")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 -- safe mode refuses lambdas and unknown classes
        first = (str(exc).splitlines() or [""])[0][:160]
        raise StoreError(f"{path} cannot be loaded in Keras' safe mode ({type(exc).__name__}: "
                         f"{first}); {MODIFIED}") from None


def _foreign_modules(node):
    """Every `module` a Keras config names that is not Keras' own."""
    if isinstance(node, dict):
        module = node.get("module")
        if isinstance(module, str) and module.split(".")[0] not in ("keras", "builtins"):
            yield f"{module}.{node.get('class_name')}"
        for value in node.values():
            yield from _foreign_modules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _foreign_modules(value)


def check_head_fits(model, info: dict, run_dir: Path) -> None:
    """The head's output units agree with run.json's classes (1 sigmoid unit for 2)."""
    units = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    k = len(info["class_names"])
    if units not in (k, 1 if k == 2 else k):
        raise ConfigError(f"{run_dir / 'run.json'} names {k} classes but head.keras has {units} "
                          f"output unit(s); {MODIFIED}")


def locate_recorded_file(recorded: str, run_dir, given: str | None, key: str,
                         command: str, folder: bool = False) -> str:
    """A file the run's store was made with (weights, mean cube), or with `folder` the
    directory (a KerasHub preset's, holding config.json), found again.

    A path given now (`given`) wins. Otherwise the recorded path (absolute when extract ran
    from the command line); when it is gone because the data, the store and the run folder
    moved together, the same tail of the path is looked for under the run folder and each of
    its parents, nearest first and longest tail first. Contents are checked by sha256 later.

    Raises:
        ConfigError: not found anywhere; the message names the flag and the config key.
    """
    flag = "--" + key.replace("_", "-")
    found = _is_preset_dir if folder else Path.is_file
    what = "preset directory" if folder else "file"
    if given:
        if not found(Path(given)):
            raise ConfigError(f"{what} not found: {given} (given with {flag}"
                              f"{'; it needs its config.json' if folder else ''}).")
        return str(Path(given).resolve())
    path = Path(recorded)
    if found(path):
        return str(path)
    tail = path.parts[1:] if path.is_absolute() else path.parts
    here = Path(run_dir).resolve()
    for anchor in (here, *here.parents):
        for k in range(len(tail), 0, -1):
            candidate = anchor.joinpath(*tail[-k:])
            if found(candidate):
                return str(candidate)
    raise ConfigError(f"{recorded} (the {what} this run's vectors were made with) is not there "
                      f"any more, nor beside the run folder; pass its new location with {flag} "
                      f"{'DIR' if folder else 'FILE'} (or {key} = \"...\" under [{command}] in "
                      "the config file).")


def _is_preset_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def run_store_path(run_dir, info: dict) -> str | None:
    """The run's own store, also when it moved together with the run folder (as weights are
    found again); None when it is not there."""
    try:
        return locate_recorded_file(str(info.get("store") or ""), run_dir, None, "store",
                                    "predict")
    except ConfigError:
        return None


def read_checked_run(run_dir) -> dict:
    """run.json, after the digests it records and its class names (against the run's store,
    while that is still the one the run was made on) are checked (see the module doc)."""
    info = read_run_info(run_dir)
    store_path = run_store_path(run_dir, info)
    try:
        store = open_store(store_path) if store_path else None
    except StoreError:  # a damaged store checks nothing; the digests still did
        store = None
    if store is not None:
        with store:
            check_class_names(run_dir, info, store)
    return info
