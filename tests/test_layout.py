"""The house rules of `pipeline/`, read from the source itself: no import circles (module-level
and function-level imports both count), the dependency rules between stages, at most 8 loose
modules at the top, none over 400 lines."""

import ast
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
