"""Worker process for an extraction on another Keras backend (see pipeline/engines.py).

Reads {"opts", "progress", "require_labels"} as JSON on stdin; its messages go to stderr and
its one JSON reply ({"result": ...} or {"error": ..., "type": ...}) to stdout.
"""

from __future__ import annotations

import dataclasses
import json
import sys


def main() -> int:
    request = json.loads(sys.stdin.read())
    from pipeline.errors import PipelineError
    from pipeline.extract.run import run_extraction

    try:
        result = run_extraction(request["opts"], progress=request["progress"],
                                require_labels=request["require_labels"],
                                echo=lambda *a: print(*a, file=sys.stderr, flush=True))
    except PipelineError as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        return 2
    print(json.dumps({"result": dataclasses.asdict(result)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
