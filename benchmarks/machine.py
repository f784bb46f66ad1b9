"""What a benchmark ran on, kept beside its figures: cores, CPU model and flags, load, date.

    from machine import machine_fields, append_rows
    before = machine_fields()            # at the start: load before
    ...
    append_rows(csv_path, rows, before)  # each row gets the machine, the load before and after
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

# The flags that decide which int8/bf16 kernels OpenVINO and oneDNN can use.
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16",
                     "amx_int8", "amx_tile")


def _cpuinfo() -> tuple[str, list[str]]:
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return model, [f for f in FLAGS_OF_INTEREST if f in flags]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_fields() -> dict:
    """The machine and its load now (1-minute load average), with the date and the command."""
    model, flags = _cpuinfo()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": cores(), "cpu": model, "cpu_flags": " ".join(flags),
            "load_before": round(os.getloadavg()[0], 2),
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}


def append_rows(path: Path, rows: list[dict], machine: dict) -> None:
    """Appends `rows` to a CSV, each with the machine, the load before and the load now."""
    after = round(os.getloadavg()[0], 2)
    full = [{**row, **machine, "load_after": after} for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(full[0]))
        if new:
            writer.writeheader()
        writer.writerows(full)
    print(f"load average before {machine['load_before']}, after {after}; rows appended to {path}")
