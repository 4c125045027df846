"""Real (non-padding) training tokens/s of the seed recipe versus pretrain()'s default path, in ONE process.

Both train the same model (the seed's 20M LLaMA, 32k vocab) on the same data with the same tokenizer.
    python benchmarks/throughput.py --device cpu --quick --json bench.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    DEFAULT_DATA,
    StepTimer,
    benchmark_config,
    machine,
    parse_variant,
    peak_memory_mb,
    pretrain_training_only,
    print_table,
    reset_peak_memory,
    seed_recipe_trainer,
    tokenizer_for,
    write_json,
)
from seed_recipe import seed_tokenize, seed_tokenizer

import tinypretrain as tp


def bench_seed(train_texts, tok, steps: int, warmup: int, out: str) -> dict:
    trainer, collator = seed_recipe_trainer(train_texts, tok, out, max_steps=warmup + steps)
    timer = StepTimer(warmup, real_tokens=collator.real)
    trainer.add_callback(timer)
    reset_peak_memory()
    trainer.train()
    real, slots = sum(collator.real), sum(collator.slots)
    return {
        "path": "seed recipe (batch 4, padded)",
        "real_tok_s": timer.tokens_per_s(),
        "padding": 1 - real / slots,
        "peak_mem_mb": peak_memory_mb(),
    }


def bench_pretrain(data: Path, tok_path: str, steps: int, warmup: int, out: str, name: str = "", **overrides) -> dict:
    cfg = benchmark_config(data, tok_path, preset="seed-20m", max_steps=warmup + steps, **overrides)
    timer = StepTimer(warmup, block_length=cfg.max_length)
    reset_peak_memory()
    pretrain_training_only(cfg, out, timer)
    label = f"pretrain() {name or 'default'} ({timer.rows_per_step}x{cfg.max_length} packed blocks per step)"
    return {
        "path": label,
        "real_tok_s": timer.tokens_per_s(),
        "padding": 0.0,
        "peak_mem_mb": peak_memory_mb(),
        "rows_per_step": timer.rows_per_step,
    }


def bench_plain_loop(blocks: np.ndarray, batch: int, steps: int, warmup: int) -> dict:
    """Reference: a bare PyTorch loop on random packed windows (no Trainer, no dataloader)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tp.build_model(tp.make_llama_config(), seed=0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device == "cuda")
    rng = np.random.default_rng(0)
    reset_peak_memory()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize() if device == "cuda" else None
            start = time.perf_counter()
        x = torch.from_numpy(blocks[rng.integers(0, len(blocks), batch)]).to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize() if device == "cuda" else None
    tokens = batch * blocks.shape[1] * steps
    return {
        "path": f"plain loop ({batch}x{blocks.shape[1]})",
        "real_tok_s": tokens / (time.perf_counter() - start),
        "padding": 0.0,
        "peak_mem_mb": peak_memory_mb(),
    }


def packed_blocks(texts, tok, max_length: int, num_proc: int | None = None):
    """pretrain()'s data path, uncached: tokenize whole texts (overflow="split"), then pack max_length blocks."""
    tokenized = texts.map(
        tp.tokenize_truncate,
        batched=True,
        remove_columns=["text"],
        load_from_cache_file=False,
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tok, "max_length": max_length, "overflow": "split"},
    )
    return tp.pack_dataset(tokenized, max_length)


def bench_tokenization(train_texts, tok, max_length: int) -> list[dict]:
    rows = []
    stok = seed_tokenizer(tok)
    for label, fn in (
        ("seed map(process_func, num_proc=8)", lambda: seed_tokenize(train_texts, stok, num_proc=8, cache=False)),
        ("seed map(process_func), 1 process", lambda: seed_tokenize(train_texts, stok, num_proc=None, cache=False)),
        ("tokenize_truncate(split) + pack_dataset, num_proc=8", lambda: packed_blocks(train_texts, tok, max_length, 8)),
        ("tokenize_truncate(split) + pack_dataset", lambda: packed_blocks(train_texts, tok, max_length)),
    ):
        start = time.perf_counter()
        fn()
        rows.append({"pipeline": label, "stories_per_s": len(train_texts) / (time.perf_counter() - start)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Corpus dir (train/valid .txt files).")
    parser.add_argument("--tokenizer", help="Tokenizer path/name (default: a 32k BPE trained on --data, cached).")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="Few steps: minutes on 2 CPU cores.")
    parser.add_argument("--steps", type=int, help="Timed steps per path (default: 200 GPU, 20 CPU, 6 quick).")
    parser.add_argument("--plain", action="store_true", help="Also time the bare PyTorch loop reference.")
    parser.add_argument("--variant", action="append", default=[], help="name:field=value,... (a lever to time).")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.cuda.is_available = lambda: False  # keep every path on the CPU even on a GPU machine
    if not (args.data / "train.txt").exists() and not list(args.data.glob("train*")):
        raise SystemExit(f"No training data in {args.data}; pass --data DIR.")
    steps = args.steps or (6 if args.quick else 20 if args.device == "cpu" else 200)
    warmup = 1 if args.device == "cpu" else 10
    tok_path = tokenizer_for(args.data, args.tokenizer)
    tok = tp.load_tokenizer(tok_path)
    train_texts = tp.load_text_dataset(args.data, "train")

    info = machine()
    rows: list[dict] = []
    tokenization: list[dict] = []

    def report() -> None:  # after every path, so a run cut short still leaves its results
        seed = rows[0]["real_tok_s"]
        for row in rows:
            row["ratio_to_seed"] = row["real_tok_s"] and row["real_tok_s"] / seed
        print(f"\nThroughput on {info['device']}, torch {info['torch']}, {info['date']}; model: seed-20m (19.5M)")
        print_table(rows, ["path", "real_tok_s", "padding", "peak_mem_mb", "ratio_to_seed"])
        if tokenization:
            print(f"\nTokenization of {len(train_texts):,} stories ({args.data / 'train*'})")
            print_table(tokenization, ["pipeline", "stories_per_s"])
        ours = rows[1]["real_tok_s"] if len(rows) > 1 else None
        write_json(
            args.json,
            {
                "machine": info,
                "steps": steps,
                "rows": rows,
                "tokenization": tokenization,
                "seed_tokens_per_s": seed,
                "pretrain_tokens_per_s": ours,
                "ratio": ours / seed if ours else None,
            },
        )

    with tempfile.TemporaryDirectory() as tmp:
        # The seed's steps are ~8x smaller than ours; time it over proportionally more steps.
        rows.append(bench_seed(train_texts, tok, steps * 8, warmup * 4, f"{tmp}/seed"))
        rows.append(bench_pretrain(args.data, tok_path, steps, warmup, f"{tmp}/ours"))
        report()
        for i, (name, overrides) in enumerate(map(parse_variant, args.variant)):
            try:
                rows.append(bench_pretrain(args.data, tok_path, steps, warmup, f"{tmp}/variant{i}", name, **overrides))
            except Exception as err:  # a lever that fails on this machine is a result too; the others still run
                rows.append(
                    {"path": f"pretrain() {name}: FAILED {type(err).__name__}: {err}"[:160], "real_tok_s": None}
                )
            report()
        if args.plain:  # at the default path's batch shape
            max_length = tp.PretrainConfig().max_length
            blocks = np.asarray(packed_blocks(train_texts, tok, max_length).with_format("numpy")["input_ids"])
            rows.append(bench_plain_loop(blocks, rows[1]["rows_per_step"], steps, warmup))
            report()
    tokenization.extend(bench_tokenization(train_texts, tok, tp.PretrainConfig().max_length))
    report()


if __name__ == "__main__":
    main()
