"""Quality for a time budget on this machine: bits/byte after B seconds of training, for a plain llama2.c-style loop
of our own and for pretrain(max_time=B) variants, one after the other (run it on an idle machine).

    python benchmarks/budget.py --budgets 60 300 --json benchmarks/results/budget.json

Scores come from a selection split held out of train.txt (the last --selection stories), never from valid.txt,
unless --score_on valid is given (for the final report only).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import DEFAULT_DATA, machine, parse_variant, print_table, tokenizer_for, write_json
from transformers import LlamaForCausalLM

import tinypretrain as tp
from tinypretrain.budget import schedule_factor
from tinypretrain.data import read_eot_text

DEFAULT_VARIANTS = ["defaults:", "wsd:lr_scheduler_type=warmup_stable_decay"]


def split_stories(data: Path, selection: int, score_on: str) -> tuple[Path, list[str]]:
    """A dataset folder whose train split excludes the selection stories, and the texts to score on."""
    stories = [row["text"] for row in read_eot_text([str(data / "train.txt")]) if row["text"].strip()]
    folder = Path(tempfile.mkdtemp(prefix="budget-data-"))
    (folder / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories[:-selection]))
    if score_on == "valid":
        scored = [r["text"] for r in read_eot_text([str(data / "valid.txt")]) if r["text"].strip()]
    else:
        scored = stories[-selection:]
    (folder / "validation.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in scored[:500]))
    return folder, scored


def reference_loop(train_dir: Path, tokenizer_path: str, budget_s: float, seed: int = 0) -> tuple:
    """A plain llama2.c-style script: packed 8x256 windows, AdamW, warmup then cosine to the deadline, tied
    embeddings, no Trainer. Returns the model, tokenizer and steps."""
    torch.manual_seed(seed)
    tokenizer = tp.load_tokenizer(tokenizer_path)
    texts = [r["text"] for r in read_eot_text([str(train_dir / "train.txt")])]
    ids = np.concatenate([np.array(x + [tokenizer.eos_token_id]) for x in tokenizer(texts)["input_ids"]])
    config = tp.make_llama_config(preset="cpu-2m", vocab_size=-(-len(tokenizer) // 64) * 64, tie_word_embeddings=True,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng, steps, start = np.random.default_rng(seed), 0, time.monotonic()
    while (spent := time.monotonic() - start) < budget_s:
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * schedule_factor("cosine", spent / budget_s, 0.05, 0.0)
        offsets = rng.integers(0, len(ids) - 257, size=8)
        batch = torch.from_numpy(np.stack([ids[o : o + 257] for o in offsets]))
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    return model, tokenizer, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 300.0])
    parser.add_argument("--variant", action="append", help="name:field=value,... (PretrainConfig fields)")
    parser.add_argument("--no_reference", action="store_true")
    parser.add_argument("--selection", type=int, default=500, help="Stories held out of train.txt for scoring.")
    parser.add_argument("--score_on", choices=["selection", "valid"], default="selection")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not (args.data / "train.txt").exists():
        raise SystemExit(f"{args.data}/train.txt not found: pass --data")
    train_dir, scored = split_stories(args.data, args.selection, args.score_on)
    tokenizer = tokenizer_for(train_dir, None, vocab_size=4096)  # the default run's tokenizer, trained once
    rows = []
    for budget in args.budgets:
        paths = [] if args.no_reference else [("reference loop", None)]
        paths += [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
        for name, overrides in paths:
            load = os.getloadavg()[0]
            if overrides is None:
                model, tok, steps = reference_loop(train_dir, tokenizer, budget)
                train_seconds = budget
            else:
                out = tempfile.mkdtemp(prefix="budget-run-")
                result = tp.pretrain(dataset=str(train_dir), tokenizer=tokenizer, max_time=budget, output_dir=out,
                                     num_samples=0, report_to="none", disable_tqdm=True, **overrides)
                model, tok, steps = result.model, result.tokenizer, result.metrics["train_steps"]
                train_seconds = result.metrics["train_seconds"]
            score = tp.evaluate(model, tok, scored)
            rows.append({"budget_s": budget, "path": name, "overrides": overrides, "steps": steps,
                         "train_seconds": round(train_seconds, 1), "bits_per_byte": score["bits_per_byte"],
                         "loss": score["loss"], "load_1m": load})
            print_table(rows[-1:], ["budget_s", "path", "steps", "train_seconds", "bits_per_byte", "load_1m"])
            write_json(args.json, {"machine": machine(), "scored_on": args.score_on, "rows": rows})
    print_table(rows, ["budget_s", "path", "steps", "train_seconds", "bits_per_byte", "loss", "load_1m"])
    ref = {r["budget_s"]: r["bits_per_byte"] for r in rows if r["path"] == "reference loop"}
    for r in rows:
        if r["budget_s"] in ref and r["path"] != "reference loop":
            print(f"{r['path']} at {r['budget_s']:.0f}s: {r['bits_per_byte'] / ref[r['budget_s']]:.3f}x the reference loop")
    assert all(math.isfinite(r["bits_per_byte"]) for r in rows)


if __name__ == "__main__":
    main()
