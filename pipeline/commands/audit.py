"""`run_pipeline.py audit`: leaks across splits, suspected wrong labels and outliers of a store."""

from __future__ import annotations

from pipeline.audit.options import AUDIT_OPTIONS
from pipeline.config import add_options, resolve_options

HELP = ("audit a feature store: near-duplicates across splits (leaks), suspected label errors, "
        "outliers; writes CSVs, summary.json and report.html")


def add_arguments(parser) -> None:
    add_options(parser, AUDIT_OPTIONS)


def run(args) -> str:
    from pipeline.audit.run import run_audit
    from pipeline.errors import ConfigError

    opts = resolve_options(args, AUDIT_OPTIONS, section="audit")
    if not opts["store"]:
        raise ConfigError("audit needs --store STORE (the .h5 path extract printed last), or "
                          "store = \"...\" in the [audit] table of the config file")
    return str(run_audit(opts["store"], opts, probe=_best_model(opts)))


def _best_model(opts: dict):
    """The unfitted best pipeline of a grid-search run (`--run`), checked against the store."""
    if not opts["run_dir"]:
        return None
    import json
    from pathlib import Path

    from pipeline.errors import ConfigError
    from pipeline.search.io import load_best_model
    from pipeline.store.feature_store import open_store

    info = Path(opts["run_dir"]) / "run.json"
    kind = json.loads(info.read_text()).get("kind") if info.is_file() else None
    with open_store(opts["store"]) as store:
        best = load_best_model(opts["run_dir"], provenance=store.provenance) \
            if kind == "grid_search" else None
    if best is None or best.head is not None:
        raise ConfigError(f"--run takes a grid-search run whose best model is a scikit-learn "
                          f"pipeline; {opts['run_dir']} is not one (leave --run out to use the "
                          "default logistic regression)")
    from sklearn.base import clone

    return clone(best.pipeline)
