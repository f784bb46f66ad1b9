"""`--precision auto`: which precision the backbone computes in, and why, in one line.

`auto` (the default) is bfloat16 where the CPU computes it natively (its flags name AMX or
AVX512-BF16) and the engine runs bfloat16 there (`Engine.cpu_bfloat16`: the native OpenVINO
engine), and float32 elsewhere: on a CPU without those units, with an engine that would only
emulate bfloat16, and on a GPU (which runs what it ran before: float32 unless asked).
`engines.auto_precision` makes the choice; this module reads the CPU's flags, holds the
guard's rule and words the choice.

bfloat16 keeps 8 bits of mantissa, so a model whose signal lies in small differences of large
activations loses it. Before a store is written, auto's bfloat16 is checked: the vectors of
BFLOAT16_GUARD_FILES held-back files (the first of the dataset's seeded ranking, as int8's) are
computed in float32 and in bfloat16, and bfloat16 is kept only when their median cosine
similarity reaches BFLOAT16_GUARD_MEDIAN; otherwise extract says so in a `warning:` line and
makes the float32 store. The figures are recorded in the store (`precision_choice`) and
printed by `info`.

The resolved precision, not `auto`, is what the store's key and its recorded options hold: on
a CPU without native bfloat16, `auto` and `--precision float32` make the same store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.config import environment_value

# The CPU flags (Linux /proc/cpuinfo names) of units that compute bfloat16 natively.
NATIVE_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
# Space-separated flags read instead of the CPU's own (pipeline.config.ENVIRONMENT): tests
# fake a CPU with or without bfloat16 units with it (set, even empty, it wins over cpuinfo).
CPU_FLAGS_KNOB = "PIPELINE_CPU_FLAGS"
CPUINFO = Path("/proc/cpuinfo")
# Measured bfloat16 against float32 on the native engine (docs/precision.md): median cosine
# 0.99999 for ResNet50, VGG19 and Xception (random weights); 0.993 for the ImageNet MobileNet,
# whose bfloat16 vectors cost a default head 0.02 of test accuracy on flowers5. 0.999 keeps
# the first three and refuses the last.
BFLOAT16_GUARD_MEDIAN = 0.999
# Few files suffice (the cosines of one model barely spread) and keep the guard's cost small.
BFLOAT16_GUARD_FILES = 16
KEPT = "bfloat16 kept"
REFUSED = "refused: float32 vectors stored"


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset:
    """The CPU's feature flags: $PIPELINE_CPU_FLAGS when set, else the first `flags` line of
    `cpuinfo` (empty where there is none, as on a machine that is not Linux)."""
    faked = environment_value(CPU_FLAGS_KNOB)
    if faked is not None:
        return frozenset(faked.split())
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bfloat16_flag(flags: frozenset | None = None) -> str | None:
    """The first flag of a native bfloat16 unit the CPU has (AMX first), or None."""
    flags = cpu_flags() if flags is None else flags
    return next((flag for flag in NATIVE_BFLOAT16_FLAGS if flag in flags), None)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision the backbone computes in and why; `asked` is `auto` when auto chose it."""

    precision: str
    why: str = "asked"
    asked: str = ""
    guard: dict = field(default_factory=dict)

    @property
    def needs_guard(self) -> bool:
        """auto's bfloat16 is measured against float32 before any vector is stored."""
        return self.asked == "auto" and self.precision == "bfloat16" and not self.guard

    def after_guard(self, report: dict) -> "PrecisionChoice":
        """This choice once the guard has measured: bfloat16 kept, or float32 instead."""
        if report.get("decision") == KEPT:
            return replace(self, guard=report)
        return replace(self, precision="float32", guard=report,
                       why=f"{self.why}, but the guard refused bfloat16")

    def line(self) -> str:
        """`precision: bfloat16 (auto: ...; guard: median cosine ...)`, printed by extract."""
        guard = f"; guard: {describe_guard(self.guard)}" if self.guard else ""
        return f"precision: {self.precision} ({self.why}{guard})"

    def record(self) -> dict:
        """Kept in the store's provenance as `precision_choice` (not part of the key)."""
        return {"asked": self.asked, "chose": self.precision, "why": self.why,
                "bfloat16_guard": self.guard}


def describe_guard(guard: dict) -> str:
    return (f"median cosine {guard.get('cosine_median')} (min {guard.get('cosine_min')}) to "
            f"float32 on {guard.get('images')} {guard.get('measured_on')}, threshold "
            f"{guard.get('threshold')}: {guard.get('decision')}")


def describe_choice(provenance: dict) -> str:
    """`info`'s precision line: the precision, and for a store made by auto why and its guard."""
    precision = provenance.get("precision") or "float32"
    choice = provenance.get("precision_choice") or {}
    if not choice:
        return precision
    guard = choice.get("bfloat16_guard") or {}
    return f"{precision} ({choice.get('why')}" + \
        (f"; guard: {describe_guard(guard)})" if guard else ")")
