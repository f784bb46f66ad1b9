"""Worker process for an extraction on another Keras backend (see pipeline/extract/engines.py).

Reads {"config", "progress", "require_labels", "calibration"} as JSON on stdin (`config` is an
`ExtractConfig.as_dict()`); its messages go to stderr and its one JSON reply ({"result": ...} or
{"error": ..., "type": ...}) to stdout.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from pipeline import quiet_startup
from pipeline.errors import PipelineError
from pipeline.extract.options import ExtractConfig
from pipeline.plugins import load_plugins


def main() -> int:
    quiet_startup.install()  # this process's first `import tensorflow` is filtered
    request = json.loads(sys.stdin.read())
    from pipeline.extract.run import run_extraction  # lazy: loads h5py

    try:
        config = ExtractConfig.from_mapping(request["config"])
        load_plugins(config.plugin)  # before any backbone is looked up
        result = run_extraction(config, progress=request["progress"],
                                require_labels=request["require_labels"],
                                calibration=request.get("calibration"),
                                echo=lambda *a: print(*a, file=sys.stderr, flush=True))
    except PipelineError as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        return 2
    print(json.dumps({"result": dataclasses.asdict(result)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
