"""Importing the package changes nothing in the importing process: no import hook, no file
descriptor redirected (the CLI quiets TensorFlow's start-up chatter itself)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_pipeline_installs_no_hook_and_leaves_fd_2_alone():
    script = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
hooks_before = list(sys.meta_path)
fd2_before = os.fstat(2).st_ino, os.fstat(2).st_dev
import pipeline, pipeline.extract, pipeline.extract.options, pipeline.extract.run
print(json.dumps({{"new_hooks": [type(h).__name__ for h in sys.meta_path if h not in hooks_before],
                  "fd2_same": (os.fstat(2).st_ino, os.fstat(2).st_dev) == fd2_before,
                  "env": os.environ.get("TF_CPP_MIN_LOG_LEVEL")}}))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"new_hooks": [], "fd2_same": True, "env": None}, seen
