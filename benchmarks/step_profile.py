"""Where one training step's CPU time goes: torch.profiler over a few training steps of a model shape, each as
``step_time.py`` runs it (random token ids: the ops' costs do not depend on the text), with bf16 autocast or not,
any attention kernel, and transformers' loss or the chunked one. Prints the ops with the most self CPU time and each
one's share of the step.

    python benchmarks/step_profile.py --bf16 --json benchmarks/results/step-profile-amx.json

Run it on an idle machine: the milliseconds are timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _common import machine, print_table, write_json
from step_time import add_step_arguments, make_step
from torch.profiler import profile

COLUMNS = ["op", "self_ms_per_step", "share", "calls_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--attn_implementation", choices=["sdpa", "eager", "sdpa_fp32"], default="sdpa")
    parser.add_argument("--loss_chunk_size", type=int, help="The chunked loss in chunks of this many tokens.")
    parser.add_argument("--steps", type=int, default=5, help="Profiled steps (after 5 warm-up steps).")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json")
    args = parser.parse_args()

    step = make_step({"attn_implementation": args.attn_implementation, "loss_chunk_size": args.loss_chunk_size}, args)
    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_ms = (time.perf_counter() - start) / args.steps * 1000
    with profile() as prof:
        for _ in range(args.steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    rows = [{"op": e.key[:60], "self_ms_per_step": round(e.self_cpu_time_total / 1000 / args.steps, 2),
             "share": round(e.self_cpu_time_total / total_us, 3), "calls_per_step": e.count // args.steps}
            for e in events]
    load = os.getloadavg()[0]
    print(f"step: {step_ms:.1f} ms unprofiled ({args.preset}, {args.batch}x{args.max_length}, "
          f"{'bf16' if args.bf16 else 'fp32'}, {args.attn_implementation}, loss chunks {args.loss_chunk_size}; "
          f"load {load:.2f})")
    print_table(rows, COLUMNS)
    write_json(args.json, {"machine": machine(), "command": sys.argv, "step_ms": step_ms, "load_1m": load,
                           "rows": rows})


if __name__ == "__main__":
    main()
