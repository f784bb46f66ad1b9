"""`run_pipeline.py demo`: every stage on an embedded dataset (scikit-learn's digits), offline."""

from __future__ import annotations

from pipeline.config import Option, add_options, resolve_options

HELP = ("run extract -> fit-head -> grid-search -> audit on scikit-learn's digits (offline, "
        "about 2 minutes on 2 CPU cores)")

DEMO_OPTIONS = (
    Option("backbone", str, "resnet50", "backbone to extract with", metavar="NAME"),
    Option("weights", str, "none", "none (random, offline), imagenet, or a weights file",
           metavar="none|imagenet|FILE"),
    Option("input_size", int, 32, "input size of the backbone", metavar="PIXELS"),
    Option("cache_dir", str, "cache", "where the digits, the store and the runs go", metavar="DIR"),
    Option("out", str, None, "folder of the run folders [default: CACHE_DIR/runs]", metavar="DIR"),
    Option("time_budget", float, 90.0, "seconds the grid-search may spend launching candidates"),
    Option("progress", bool, True, "show progress bars"),
)


def add_arguments(parser) -> None:
    add_options(parser, DEMO_OPTIONS)


def run(args) -> str:
    from pipeline.demo import run_demo

    opts = resolve_options(args, DEMO_OPTIONS, section="demo")
    return str(run_demo(opts))
