"""The house rules of `pipeline/`, read from the source itself: no import circles (module-level
and function-level imports both count), the dependency rules between stages, at most 8 loose
modules at the top, none over 400 lines, and the package's own modules imported inside a function
only where importing them at the top would load a heavy package or close a circle."""

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PIPELINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict:
    """module -> the pipeline modules it imports anywhere in its body (lazy imports included)."""
    files = {_module_name(f): f for f in PIPELINE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in found:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                # A module may import its own package (or the package's parents) freely.
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


GRAPH = _import_graph()


def _reaches(start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circles():
    circles = sorted(m for m in GRAPH if m in _reaches(m))
    assert not circles, f"modules on an import circle: {circles}"


@pytest.mark.parametrize("package, forbidden", [
    ("pipeline.store", ("pipeline.extract", "pipeline.fit", "pipeline.search", "pipeline.deploy")),
    ("pipeline.extract.sources", ("pipeline.extract.backbones",)),
    ("pipeline.extract", ("pipeline.fit", "pipeline.search", "pipeline.deploy")),
    # The evaluation layer (splits, data checks, exclusions, curves, calibration) sits below
    # every stage that scores a model, and imports none of them.
    ("pipeline.evaluation", ("pipeline.extract", "pipeline.fit", "pipeline.search",
                             "pipeline.audit", "pipeline.deploy")),
    ("pipeline.fit", ("pipeline.extract", "pipeline.search", "pipeline.deploy", "pipeline.audit")),
    ("pipeline.search", ("pipeline.extract", "pipeline.deploy", "pipeline.audit")),
    ("pipeline.audit", ("pipeline.extract.backbones", "pipeline.fit", "pipeline.search",
                        "pipeline.deploy")),
])
def test_stage_dependency_rules(package, forbidden):
    broken = sorted(f"{m} -> {t}" for m in GRAPH if m == package or m.startswith(package + ".")
                    for t in GRAPH[m] if t.startswith(forbidden) and not t.startswith(package))
    assert not broken, f"{package} must not import {forbidden}: {broken}"


def test_no_implementation_imports_the_cli_layer():
    broken = sorted(f"{m} -> {t}" for m in GRAPH if not m.startswith("pipeline.commands")
                    for t in GRAPH[m] if t.startswith("pipeline.commands"))
    assert not broken, f"implementations import the CLI layer: {broken}"


def test_store_imports_no_model_code():
    for path in (PIPELINE / "store").rglob("*.py"):
        imported = {n.names[0].name.split(".")[0] if isinstance(n, ast.Import) else
                    (n.module or "").split(".")[0]
                    for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, (ast.Import, ast.ImportFrom))}
        assert not imported & {"keras", "tensorflow", "jax", "torch"}, (path, imported)


def test_few_loose_modules_and_none_too_long():
    loose = sorted(f.name for f in PIPELINE.glob("*.py") if f.name != "__init__.py")
    assert len(loose) <= 8, f"{len(loose)} loose modules at the top of pipeline/: {loose}"
    long = {str(f.relative_to(PIPELINE)): n for f in PIPELINE.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_public_entry_points_import_from_one_place_each():
    from pipeline.deploy import export_model, predict
    from pipeline.extract import run_extraction
    from pipeline.extract.backbones import get_backbone, list_backbones, register_backbone
    from pipeline.fit import fit_head
    from pipeline.search import run_grid_search
    from pipeline.store import open_store, write_store

    assert all(callable(f) for f in (export_model, predict, run_extraction, get_backbone,
                                     list_backbones, register_backbone, fit_head,
                                     run_grid_search, open_store, write_store))


# What a reader is (a backbone's kind) and which engine runs are asked of the reader and engine
# objects; only their own modules compare those names.
READER_KINDS = {"image", "clip"}
ENGINE_NAMES = {"tensorflow", "openvino", "jax", "torch"}
NAME_SWITCHES_ALLOWED = ("extract/sources/", "extract/engines.py", "extract/openvino_engine.py",
                         "extract/quantize.py", "extract/engine_worker.py",
                         "quiet_startup.py")  # compares the module name "tensorflow" it imports
NAME_SWITCHES_PENDING: set = set()  # (module, function) pairs exempted: none


def _string_constants(node) -> set:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_string_constants(e) for e in node.elts)) if node.elts else set()
    return set()


def _name_switches(path: Path) -> list:
    """(enclosing function, line, names) of each comparison with a reader kind or an engine
    name (`spec.kind == "clip"`, `engine in ("openvino", "jax")`)."""
    found = []

    class Visitor(ast.NodeVisitor):
        def __init__(self):
            self.functions = ["<module>"]

        def visit_FunctionDef(self, node):
            self.functions.append(node.name)
            self.generic_visit(node)
            self.functions.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Compare(self, node):
            sides = [node.left, *node.comparators]
            names = set().union(*(_string_constants(s) for s in sides)) & \
                (READER_KINDS | ENGINE_NAMES)
            if names:
                found.append((self.functions[-1], node.lineno, sorted(names)))
            self.generic_visit(node)

    Visitor().visit(ast.parse(path.read_text()))
    return found


def test_no_reader_kind_or_engine_name_switches_outside_readers_and_engines():
    broken = []
    for path in sorted(PIPELINE.rglob("*.py")):
        rel = str(path.relative_to(PIPELINE))
        if rel.startswith(NAME_SWITCHES_ALLOWED):
            continue
        for func, line, names in _name_switches(path):
            if (rel, func) not in NAME_SWITCHES_PENDING:
                broken.append(f"{rel}:{line} ({func}) compares {', '.join(names)}")
    assert not broken, ("ask the reader or engine object instead (reader.unit, "
                        f"reader.rows_per_file, engine.keras_backend, ...): {sorted(set(broken))}")


# Third-party packages that make an import slow, measured on top of numpy on a loaded 2-core
# machine (TensorFlow or Keras about 5 s, scikit-learn and JAX about 1 s, scipy.stats 0.7 s,
# pandas 0.3 s, joblib 0.1 s, matplotlib 0.16 s, pyarrow 0.14 s, h5py 0.05 s), or optional
# (a run without them must still start). numpy, Pillow (0.01 s) and tqdm (0.02 s) are light.
# h5py counts as heavy so that `--help` and the light sub-modules (options, sources) stay off it.
HEAVY = frozenset({
    "tensorflow", "keras", "keras_hub", "jax", "jaxlib", "torch", "openvino", "nncf", "sklearn",
    "scipy", "pandas", "pyarrow", "matplotlib", "joblib", "h5py", "faiss", "cleanlab", "umap",
    "datasets", "ray", "dask", "distributed", "onnx", "onnxruntime", "skl2onnx", "tf2onnx",
    "ai_edge_litert", "skops", "av", "cv2",
})


def _pipeline_files() -> dict:
    return {_module_name(f): f for f in PIPELINE.rglob("*.py")}


def _imported_modules(node, package: str, files: dict) -> list:
    """The pipeline modules one import statement loads: `from a import b` is `a.b` when that is
    a module, else `a`."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(up + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                 for alias in node.names]
    found = []
    for name in names:
        while name and name not in files:
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def _imports_by_place() -> tuple:
    """(module -> every pipeline module it imports, its own packages included;
    [(module, line, imported module)] for the imports inside a function body)."""
    files = _pipeline_files()
    everywhere, in_functions = {}, set()
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        everywhere[name] = {t for node in ast.walk(tree)
                            if isinstance(node, (ast.Import, ast.ImportFrom))
                            for t in _imported_modules(node, package, files) if t != name}
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_functions.update((name, node.lineno, target) for node in ast.walk(function)
                                    if isinstance(node, (ast.Import, ast.ImportFrom))
                                    for target in _imported_modules(node, package, files))
    return everywhere, sorted(in_functions)


HEAVY_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
heavy, modules, found = set(json.loads(sys.argv[2])), json.loads(sys.argv[3]), {}
for module in modules:
    read, write = os.pipe()
    if os.fork() == 0:  # a fresh child per module: nothing of the others is loaded
        os.close(read)
        try:
            __import__(module)
            loaded = sorted(heavy & {m.partition(".")[0] for m in sys.modules})
        except ModuleNotFoundError as exc:  # an optional package is missing: it is heavy
            loaded = [exc.name.partition(".")[0]]
        except BaseException as exc:  # an import circle, or a bug: reported by the test
            loaded = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write, "w") as out:
            json.dump(loaded, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        found[module] = json.load(answer)
    os.wait()
print(json.dumps(found))
"""


@functools.lru_cache(maxsize=None)
def _heavy_loaded_by() -> dict:
    """module -> the HEAVY packages importing it loads, each module in a process of its own."""
    modules = sorted(_pipeline_files())
    proc = subprocess.run([sys.executable, "-c", HEAVY_PROBE, str(PIPELINE.parent),
                           json.dumps(sorted(HEAVY)), json.dumps(modules)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    failed = {m: loaded["error"] for m, loaded in found.items() if isinstance(loaded, dict)}
    assert not failed, f"modules that cannot be imported on their own: {failed}"
    return {m: set(loaded) for m, loaded in found.items()}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the probe forks a process per module")
def test_own_modules_are_imported_in_functions_only_when_heavy_or_on_a_circle():
    heavy = _heavy_loaded_by()
    everywhere, in_functions = _imports_by_place()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for nxt in everywhere[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    movable = [f"{PIPELINE.name}/{_pipeline_files()[m].relative_to(PIPELINE)}:{line} imports "
               f"{target}" for m, line, target in in_functions
               if heavy[target] <= heavy[m] and not reaches(target, m)]
    assert not movable, ("import these at the top of the module (they load nothing heavy the "
                         f"module does not already load, and close no circle): {movable}")
