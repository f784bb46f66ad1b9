"""Multiply-add counts of a Keras model and the peak FLOP/s of the machine, for the benchmarks."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np


def model_flops(model) -> float:
    """FLOPs (2 per multiply-add) of one sample through the conv, depthwise and dense layers.

    Pooling, normalisation and activations are left out: they are a few percent at most.
    """
    total = 0.0
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model (extract wraps the trunk in a pixels model)
            total += model_flops(layer)
            continue
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Conv3D", "DepthwiseConv2D", "Dense"):
            continue
        out_shape = layer.output.shape[1:]
        kernel = layer.kernel.shape
        if kind == "Dense":
            total += 2.0 * np.prod(out_shape[:-1] or [1]) * kernel[0] * kernel[1]
        elif kind == "DepthwiseConv2D":
            total += 2.0 * np.prod(out_shape) * kernel[0] * kernel[1]
        else:  # Conv2D / Conv3D: kernel (*window, in_per_group, out)
            total += 2.0 * np.prod(out_shape) * np.prod(kernel[:-1])
    return float(total)


def cpu_peak_gflops() -> tuple[float, str]:
    """cores x clock x FLOPs per cycle (AVX-512: 64, AVX2+FMA: 32 float32 FLOPs per cycle)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", info, re.M)[0].split()) if "flags" in info else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = len(os.sched_getaffinity(0))
    ghz = (max(mhz) / 1000.0) if mhz else 2.0
    model = (re.findall(r"^model name\s*:\s*(.*)$", info, re.M) or ["unknown CPU"])[0]
    return cores * ghz * per_cycle, f"{cores} x {model} @ {ghz:.2f} GHz, {per_cycle} FLOP/cycle"
