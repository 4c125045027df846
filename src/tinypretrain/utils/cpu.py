"""What this CPU can do for training: its model name and the matrix extensions (AMX, AVX-512 BF16, AVX-512, AVX2)
that decide whether bf16 or wider vectors pay, read at run time from /proc/cpuinfo."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

# From the most to the least capable for bf16 matmuls; the first a CPU has is its kind.
CPU_KINDS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
# The kinds with bf16 matrix instructions (AMX tiles, AVX-512 BF16 dot products), on which bf16 autocast pays.
BF16_CPU_KINDS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """``{"model": ..., "kind": ..., "flags": [...]}``: the CPU's name, its kind (the first of ``CPU_KINDS`` it has,
    else "other") and which of them it has. Off Linux, the model is ``platform.processor()`` and the kind "unknown"."""
    path = Path(cpuinfo)
    if not path.exists():
        return {"model": platform.processor() or "unknown", "kind": "unknown", "flags": []}
    model, flags = "unknown", set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    present = [kind for kind in CPU_KINDS if kind in flags]
    return {"model": model, "kind": present[0] if present else "other", "flags": present}


def has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (a kind in ``BF16_CPU_KINDS``), where bf16 autocast pays
    (``device_training_args``). ``TINYPRETRAIN_CPU_KIND`` (one of ``CPU_KINDS``) replaces the detected kind, for every
    process that inherits it: the test suite sets it so that its device defaults do not depend on the machine."""
    return (os.environ.get("TINYPRETRAIN_CPU_KIND") or cpu_features()["kind"]) in BF16_CPU_KINDS
