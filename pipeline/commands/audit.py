"""`run_pipeline.py audit`: leaks across splits, suspected wrong labels and outliers of a store."""

from __future__ import annotations

from pipeline.audit.options import AUDIT_OPTIONS, AuditConfig
from pipeline.config import add_options
from pipeline.audit.run import run_audit
from pipeline.errors import ConfigError

HELP = ("audit a feature store: near-duplicates across splits (leaks), suspected label errors, "
        "outliers; writes CSVs, summary.json and report.html")


def add_arguments(parser) -> None:
    add_options(parser, AUDIT_OPTIONS)


def run(args) -> str:
    cfg = AuditConfig.from_cli(args)
    if not cfg.store:
        raise ConfigError("audit needs --store STORE (the .h5 path extract printed last), or "
                          "store = \"...\" in the [audit] table of the config file")
    return str(run_audit(cfg.store, cfg, probe=_best_model(cfg)))


def _best_model(cfg: AuditConfig):
    """The unfitted best pipeline of a grid-search run (`--run`), checked against the store."""
    if not cfg.run_dir:
        return None
    from pipeline.search.io import load_best_model, run_kind  # lazy: these load h5py
    from pipeline.store.feature_store import open_store

    kind = run_kind(cfg.run_dir)
    with open_store(cfg.store) as store:
        best = load_best_model(cfg.run_dir, provenance=store.provenance) \
            if kind == "grid_search" else None
    if best is None or best.head is not None:
        raise ConfigError(f"--run takes a grid-search run whose best model is a scikit-learn "
                          f"pipeline; {cfg.run_dir} is not one (leave --run out to use the "
                          "default logistic regression)")
    from sklearn.base import clone

    return clone(best.pipeline)
