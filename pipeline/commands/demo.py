"""`run_pipeline.py demo`: every stage on an embedded dataset (scikit-learn's digits), offline."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.demo import DEMO_OPTIONS, DemoConfig, run_demo

HELP = ("run extract -> fit-head -> grid-search -> audit on scikit-learn's digits (offline; "
        "the time it takes is measured on the benchmarks page, docs/benchmarks.md)")

def add_arguments(parser) -> None:
    add_options(parser, DEMO_OPTIONS)


def run(args) -> str:
    return str(run_demo(DemoConfig.from_cli(args)))
