"""`tinypretrain export` on real shapes: the 20M seed preset with Llama-2's 32k tokenizer, and cpu-2m with our byte-level
BPE, each trained a few steps on TinyStories, then exported to GGUF (f32, f16, bf16) and ONNX (f32, f16, with the
key/value cache). Every export is checked as the command checks it, on 200 valid stories: the table shows file size,
export time (writing and checking) and the largest logit difference.

    python benchmarks/export.py --llama2_tokenizer ggml-vocab-llama-spm.gguf --json benchmarks/results/export.json

Llama-2's tokenizer cannot be downloaded here; llama.cpp ships its vocabulary as models/ggml-vocab-llama-spm.gguf
(in the llama-cpp-python sdist: vendor/llama.cpp/models/), which transformers reads. Pass that file or any tokenizer
folder.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

from _common import CACHE, DEFAULT_DATA, machine, print_table, run_cli, tokenizer_for, write_json
from transformers import AutoTokenizer

from tinypretrain.data.load import read_eot_text
from tinypretrain.runs.export import export_run

COLUMNS = ["preset", "tokenizer", "format", "dtype", "MiB", "seconds", "max_logit_diff", "checks", "load_1m"]
EXPORTS = [("gguf", "f32", False), ("gguf", "f16", False), ("gguf", "bf16", False), ("onnx", "f32", True),
           ("onnx", "f16", True)]


def llama2_tokenizer(path: str) -> str:
    """A tokenizer folder: ``path`` itself, or the tokenizer transformers reads out of a .gguf vocabulary file."""
    source = Path(path)
    if source.suffix != ".gguf":
        return path
    folder = CACHE / f"tokenizer-{source.stem}"
    if not (folder / "tokenizer.json").exists():
        AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name).save_pretrained(folder)
    return str(folder)


def train(output: Path, data: Path, preset: str, tokenizer: str, steps: int) -> None:
    run_cli("train", "--dataset", str(data), "--preset", preset, "--tokenizer", tokenizer, "--max_steps", str(steps),
            "--max_length", "256", "--story_samples", "0", "--num_samples", "0", "--max_eval_samples", "50",
            "--output_dir", str(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder with train.txt and valid.txt.")
    parser.add_argument("--llama2_tokenizer", required=True,
                        help="Llama-2's tokenizer: a folder, or a .gguf vocabulary (llama.cpp's ggml-vocab-llama-spm).")
    parser.add_argument("--steps", type=int, default=20, help="Training steps per run (the export does not care).")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    valid = [r["text"] for r in itertools.islice(read_eot_text([str(args.data / "valid.txt")]), 200)]
    runs = [("seed-20m", "Llama-2 32k", llama2_tokenizer(args.llama2_tokenizer)),
            ("cpu-2m", "BPE 4096", tokenizer_for(args.data, None, 4096))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="export-bench-") as root:
        for preset, tokenizer_name, tokenizer in runs:
            run = Path(root) / preset
            train(run, args.data, preset, tokenizer, args.steps)
            for fmt, dtype, with_past in EXPORTS:
                done = export_run(run, fmt, dtype=dtype, with_past=with_past, texts=valid,
                                  output=run / "export" / f"{fmt}-{dtype}" if fmt == "onnx" else None)
                checks = {k: v for k, v in done.checks.items() if k not in ("max_logit_diff", "bound")}
                rows.append({"preset": preset, "tokenizer": tokenizer_name, "format": fmt, "dtype": dtype,
                             "MiB": round(done.bytes / 2**20, 1), "seconds": done.seconds,
                             "max_logit_diff": float(f"{done.checks['max_logit_diff']:.2g}"),
                             "checks": ", ".join(f"{k}={v}" for k, v in checks.items()),
                             "load_1m": round(os.getloadavg()[0], 2)})
                print(rows[-1], flush=True)
    print_table(rows, COLUMNS)
    write_json(args.json, {"machine": machine(), "steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
