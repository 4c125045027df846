"""The peak fp32 matmul FLOP/s of this machine, measured: the number to pass as `--peak_flops` so that run.json's
MFU is against what this CPU can really do (vendor peaks assume every core at turbo with perfect vector use).

    python benchmarks/cpu_peak.py --json benchmarks/results/cpu-peak.json

Times square matmuls of several sizes with all of torch's threads and keeps the best rate.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import machine, print_table, write_json


def matmul_rate(size: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [{"dtype": "fp32", "size": n, "flops_per_s": matmul_rate(n, torch.float32), "load_1m": os.getloadavg()[0]}
            for n in args.sizes]
    print_table(rows, ["dtype", "size", "flops_per_s", "load_1m"])
    peak = max(r["flops_per_s"] for r in rows)
    print(f"\npeak: {peak:.3g} FLOP/s -> tinypretrain train --peak_flops {peak:.3g}")
    write_json(args.json, {"machine": machine(), "rows": rows, "peak_flops_per_s": peak})


if __name__ == "__main__":
    main()
