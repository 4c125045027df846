"""Collator speed on a 64 x 512 batch of variable-length rows (causal_collator vs DataCollatorForLanguageModeling),
and the cost of fetching packed 64 x 512 batches through a DataLoader with rows as Python lists vs numpy arrays.

    python benchmarks/collate.py --json collate.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine, print_table, write_json
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling

import tinypretrain as tp


def timed(collate, features, repeats: int) -> float:
    collate([dict(f) for f in features])
    start = time.perf_counter()
    for _ in range(repeats):
        collate([dict(f) for f in features])
    return (time.perf_counter() - start) / repeats * 1e3


def fetch_ms(blocks: np.ndarray, batch: int, fmt: str | None, repeats: int) -> float:
    """DataLoader fetch + collate time per batch of packed rows from a datasets.Dataset in the given format."""
    import torch

    ds = tp.pack_dataset(Dataset.from_dict({"input_ids": blocks.tolist()}), blocks.shape[1])
    loader = torch.utils.data.DataLoader(
        ds.with_format(fmt), batch_size=batch, shuffle=True, collate_fn=tp.causal_collator(pad_token_id=0)
    )
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    for _ in range(repeats):
        next(batches)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tok = tp.train_tokenizer(tp.generate_stories(300), vocab_size=300)
    tok.pad_token = tok.eos_token
    lengths = rng.integers(args.max_length // 4, args.max_length + 1, args.batch)
    features = [{"input_ids": rng.integers(4, 300, n).tolist(), "attention_mask": [1] * int(n)} for n in lengths]
    packed = [{"input_ids": rng.integers(4, 300, args.max_length).tolist()} for _ in range(args.batch)]
    rows = [
        {
            "collator": "DataCollatorForLanguageModeling (seed)",
            "rows": "variable",
            "ms_per_batch": timed(DataCollatorForLanguageModeling(tok, mlm=False), features, args.repeats),
        },
        {
            "collator": "causal_collator",
            "rows": "variable",
            "ms_per_batch": timed(tp.causal_collator(tok), features, args.repeats),
        },
        {
            "collator": "causal_collator",
            "rows": "packed",
            "ms_per_batch": timed(tp.causal_collator(tok), packed, args.repeats),
        },
    ]
    blocks = rng.integers(4, 32000, (args.batch * (args.repeats + 2), args.max_length))
    fetch = [
        {"dataset format": fmt or "python lists", "ms_per_batch": fetch_ms(blocks, args.batch, fmt, args.repeats)}
        for fmt in (None, "numpy")
    ]
    info = machine()
    print(f"\nDataLoader fetch + collate of packed {args.batch} x {args.max_length} batches")
    print_table(fetch, ["dataset format", "ms_per_batch"])
    print(f"\nCollating {args.batch} x {args.max_length} on {info['device']}, {info['date']}")
    print_table(rows, ["collator", "rows", "ms_per_batch"])
    write_json(
        args.json, {"machine": info, "batch": args.batch, "max_length": args.max_length, "rows": rows, "fetch": fetch}
    )


if __name__ == "__main__":
    main()
