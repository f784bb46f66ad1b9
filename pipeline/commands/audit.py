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
    return str(run_audit(opts["store"], opts))
