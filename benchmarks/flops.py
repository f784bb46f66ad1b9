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


def _cpuinfo_field(info: str, name: str, default: str = "") -> str:
    found = re.findall(rf"^{name}\s*:\s*(.*)$", info, re.M)
    return found[0].strip() if found else default


def flops_per_cycle(flags: set, vendor: str, family: int) -> tuple[dict, str]:
    """FLOPs (int8: operations; 2 per multiply-add) one core can start per cycle, per precision,
    from the widest multiply-add of its ISA and how many it issues per cycle; with the basis.

    The figures are the ISA's arithmetic, not a measurement (benchmarks/native_engine.py checks
    the bf16/f32 ratio against a measured GEMM)."""
    if "amx_bf16" in flags:  # Intel AMX: one TMUL per core, 1024 bf16 / 2048 int8 ops a cycle
        return ({"float32": 64, "bfloat16": 1024, "int8": 2048},
                "AMX: 1024 bf16 and 2048 int8 ops/cycle (TMUL), 2 x 512-bit FMA for f32")
    if vendor == "AuthenticAMD" and family == 25 and "avx512f" in flags:
        # Zen 4: two 256-bit FMA pipes, a 512-bit op runs as two halves. Per 256 bits:
        # FMA 8 f32 multiply-adds, VDPBF16PS 16 bf16 products, VPDPBUSD 32 int8 products.
        return ({"float32": 32, "bfloat16": 64 if "avx512_bf16" in flags else 32,
                 "int8": 128 if "avx512_vnni" in flags else 64},
                "Zen 4: 2 x 256-bit FMA pipes; FMA 32 f32, VDPBF16PS 64 bf16, VPDPBUSD 128 int8 "
                "ops/cycle")
    if "avx512f" in flags:  # two 512-bit FMA units (Intel Xeon, AMD Zen 5)
        return ({"float32": 64, "bfloat16": 128 if "avx512_bf16" in flags else 64,
                 "int8": 256 if "avx512_vnni" in flags else 128},
                "2 x 512-bit FMA units; FMA 64 f32, VDPBF16PS 128 bf16, VPDPBUSD 256 int8 ops/cycle")
    wide = 32 if {"avx2", "fma"} <= flags else 8
    return ({"float32": wide, "bfloat16": wide, "int8": 2 * wide},
            f"{'AVX2 + FMA' if wide == 32 else 'SSE'}: {wide} f32 FLOP/cycle, no bf16 unit")


def cpu_peak_gflops(precision: str = "float32") -> tuple[float, str]:
    """cores x clock (the highest `cpu MHz` in /proc/cpuinfo) x FLOPs per cycle at `precision`
    (`flops_per_cycle`); with a line saying how it was computed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(_cpuinfo_field(info, "flags").split())
    vendor = _cpuinfo_field(info, "vendor_id")
    family = int(_cpuinfo_field(info, "cpu family", "0") or 0)
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
    per_cycle, basis = flops_per_cycle(flags, vendor, family)
    cores = len(os.sched_getaffinity(0))
    ghz = (max(mhz) / 1000.0) if mhz else 2.0
    model = _cpuinfo_field(info, "model name", "unknown CPU")
    rate = per_cycle.get(precision, per_cycle["float32"])
    return cores * ghz * rate, (f"{cores} x {model} (family {family}) @ {ghz:.2f} GHz x "
                                f"{rate} {precision} FLOP/cycle ({basis})")
