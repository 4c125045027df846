"""Milliseconds per training step of a model shape, for variants of the fields that change how a step is computed
(``bf16``, ``attn_implementation``, ``loss_chunk_size``, ``torch_compile``), timed in interleaved rounds so that a
machine's drift falls on all of them alike. A step is what a run's Trainer does: forward to the hidden states (and
the last position's logits), the loss (transformers' over all logits, or ``causal_lm_loss`` in chunks), backward,
clipping, AdamW. Random token ids: the ops' costs do not depend on the text.

    python benchmarks/step_time.py --bf16 --variant "defaults:" \\
        --variant "fp32 attention:attn_implementation=sdpa_fp32" --variant "chunked loss:loss_chunk_size=256" \\
        --json benchmarks/results/step-time-amx.json

Run it on an idle machine: the milliseconds are timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from _common import machine, parse_variant, print_table, write_json

import tinypretrain as tp
from tinypretrain.model.build import with_attention

COLUMNS = ["variant", "ms_per_step", "ms_per_round", "ratio_to_first", "tokens_per_s"]
STEP_FIELDS = {"bf16", "attn_implementation", "loss_chunk_size", "torch_compile"}


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The model shape and step size that ``make_step`` builds (this script's and ``step_profile.py``'s options)."""
    parser.add_argument("--preset", default="cpu-2m")
    parser.add_argument("--vocab_size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8, help="Blocks per step.")
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as on a CPU with AMX (unless a variant "
                        "sets bf16).")


def make_step(overrides: dict, args: argparse.Namespace):
    """A function that runs one training step of a fresh model built as ``overrides`` say."""
    torch.manual_seed(0)
    config = tp.make_llama_config(preset=args.preset, vocab_size=args.vocab_size)
    model = with_attention(tp.build_model(config, init="kaiming", seed=0), overrides.get("attn_implementation"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, args.vocab_size, (args.batch, args.max_length))
    forward = torch.compile(model) if overrides.get("torch_compile") else model
    chunk = overrides.get("loss_chunk_size")
    bf16 = overrides.get("bf16", args.bf16)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if not chunk:  # 0 or unset: transformers' loss
                loss = forward(input_ids=ids, labels=ids, use_cache=False).loss
            else:  # as the Trainer's loss hook: hidden states in, chunked lm_head + CE
                hidden = forward(input_ids=ids, use_cache=False, logits_to_keep=1,
                                 output_hidden_states=True).hidden_states[-1]
                loss = tp.causal_lm_loss(hidden, model.lm_head.weight, ids, chunk_size=chunk) / ids[:, 1:].numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True,
                        help=f"'name:field=value,...' over {sorted(STEP_FIELDS)}; the first is the baseline.")
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per variant and round.")
    parser.add_argument("--json")
    args = parser.parse_args()

    variants = [parse_variant(spec) for spec in args.variant]
    for name, overrides in variants:
        if set(overrides) - STEP_FIELDS:
            raise SystemExit(f"--variant {name!r}: only {sorted(STEP_FIELDS)} change a step here.")
    load_before = os.getloadavg()[0]
    steps = {}
    for name, overrides in variants:
        steps[name] = make_step(overrides, args)
        for _ in range(5):  # warm-up (and the compile, for compiled variants)
            steps[name]()
    rounds: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            rounds[name].append(statistics.median(times) * 1000)
    first = statistics.median(rounds[variants[0][0]])
    rows = [{"variant": name, "ms_per_step": round(statistics.median(ms), 1),
             "ms_per_round": " ".join(f"{m:.0f}" for m in ms),
             "ratio_to_first": round(statistics.median(ms) / first, 3),
             "tokens_per_s": round(args.batch * args.max_length / statistics.median(ms) * 1000)}
            for name, ms in rounds.items()]
    load_after = os.getloadavg()[0]
    print(f"{args.preset}, {args.batch}x{args.max_length}, {args.rounds} rounds of {args.steps} steps; "
          f"load {load_before:.2f} before, {load_after:.2f} after")
    print_table(rows, COLUMNS)
    write_json(args.json, {"machine": machine(), "command": sys.argv, "load_1m": [load_before, load_after],
                           "variants": dict(variants), "rows": rows})


if __name__ == "__main__":
    main()
