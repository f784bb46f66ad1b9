#!/usr/bin/env python3
"""Two-stage feature caching for transfer learning: extract once, fit heads in seconds.

    python run_pipeline.py demo                      # the whole job on an embedded dataset
    python run_pipeline.py extract --data photos/ --backbone resnet50 --weights w.weights.h5
    python run_pipeline.py fit-head --store cache/<store>.h5
    python run_pipeline.py grid-search --store cache/<store>.h5
    python run_pipeline.py info cache/<store>.h5
    python run_pipeline.py predict --run cache/runs/<run> --data new_photos/
    python run_pipeline.py export --run cache/runs/<run>
    python run_pipeline.py audit --store cache/<store>.h5    # leaks, label issues, outliers
    python run_pipeline.py import --vectors emb.parquet --name clip  # your own vectors
    python run_pipeline.py vectors --store cache/<store>.h5  # Parquet for pandas, DuckDB

Each command prints the path of what it made (store or run folder) as its last line of standard
output. Bad input ends with one line on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> module in pipeline/commands; modules import Keras only when they run.
COMMANDS = {
    "demo": "demo",
    "extract": "extract",
    "info": "info",
    "fit-head": "fit_head",
    "grid-search": "grid_search",
    "predict": "predict",
    "export": "export",
    "audit": "audit",
    "import": "import_vectors",
    "vectors": "vectors",
}


def _available_commands() -> dict:
    found = {}
    for name, module in COMMANDS.items():
        try:
            found[name] = importlib.import_module(f"pipeline.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pipeline.commands.{module}":
                raise
    return found


class _OneLineErrors(argparse.ArgumentParser):
    """argparse's refusals in the house format: one `error: ...` line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _program_name() -> str:
    """`featcache` when run as the installed command, else `run_pipeline.py`."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "featcache" if invoked == "featcache" else "run_pipeline.py"


def _version() -> str:
    from pipeline import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog=_program_name(), description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
    args = build_parser().parse_args(argv)
    from pipeline.config import check_keras_environment
    from pipeline.errors import PipelineError
    from pipeline.quiet_startup import quiet_process_tree

    try:
        check_keras_environment()  # Keras reads them on import, where a bad one is a traceback
        # TensorFlow's C++ start-up notices (here and in every worker process) are dropped.
        with quiet_process_tree():
            output = args.run(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    if output is not None:
        print(output, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
