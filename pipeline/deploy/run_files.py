"""Reading a run folder's own files (run.json, head.keras) before anything trusts them.

A run folder can be edited or swapped after fit-head or grid-search wrote it: a `head.keras`
with a Lambda layer, a config naming `os.system`, an HDF5 file under the `.keras` name, a
run.json that is not a run's description. Each is refused with one line that names the file and
says the folder was modified or is not one of ours; nothing in it is executed.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import ConfigError, StoreError

# What a refused run file means for the user: someone edited or swapped it after the run.
MODIFIED = ("the run folder was modified after it was written or is not one of ours; use the "
            "folder fit-head or grid-search printed, or run it again.")


def read_run_info(run_dir) -> dict:
    """`run.json` of a run folder, with a clear error when it is not one."""
    path = Path(run_dir) / "run.json"
    if not Path(run_dir).exists():
        raise ConfigError(f"run folder not found: {run_dir}; pass the folder that fit-head or "
                          "grid-search printed as its last line (with --run).")
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
    return info


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
