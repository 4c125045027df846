"""Memory and speed of a training run's data pipeline as the corpus grows: the texts (blank ones dropped, eval texts
held out), tokenized and packed into blocks as `tinypretrain train` does it, on N generated stories, each size in a
fresh process with an empty datasets cache. Two modes:

- cached: `load_texts` -> `training_rows` (datasets.map tokenization with overflow="split", `pack_dataset` into the
  datasets cache); `load_seconds` is `load_texts` (the .txt into Arrow, blank texts dropped, eval texts held
  out), `pack_seconds` is `pack_dataset`, and `tokenize_tokens_per_s` times the tokenization (datasets.map) alone;
- streamed (`--streaming true`): one pass of the `BlockStream` a streamed run trains from (tokenized and packed as
  blocks are pulled; nothing cached).

    python benchmarks/data_scale.py --stories 50000 2700000 --json benchmarks/results/data_scale.json
    python benchmarks/data_scale.py --encoders 100000 --json benchmarks/results/encoders.json

Peak RSS is the child process's maximum resident set (getrusage), which includes Python, torch and the tokenizer,
and the pages of the memory-mapped Arrow cache files it has read (file-backed, reclaimable by the kernel); the
split at the end (RssAnon: the process's own memory, RssFile: mapped files) shows which part grows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import eot_text, machine, print_table, write_json

import tinypretrain as tp

COLUMNS = ["mode", "stories", "tokens", "seconds", "tokens_per_s", "load_seconds", "pack_seconds",
           "tokenize_tokens_per_s", "peak_rss_gb", "rss_anon_gb_end", "rss_file_gb_end", "load_1m"]
CHILD = """
import json, resource, sys, tempfile, time
import datasets
import tinypretrain as tp
import tinypretrain.data.prepare as prepare
datasets.disable_progress_bars()
corpus, tokenizer_dir, block, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
streaming = mode == "streamed"
cfg = tp.PretrainConfig(dataset=corpus, tokenizer=tokenizer_dir, max_length=block, output_dir=tempfile.mkdtemp(),
                        streaming=streaming, max_steps=1 if streaming else -1)
tok = tp.load_tokenizer(tokenizer_dir)
packing = [0.0]
pack = prepare.pack_dataset
def timed_pack(*args, **kwargs):
    start = time.perf_counter()
    try:
        return pack(*args, **kwargs)
    finally:
        packing[0] += time.perf_counter() - start
prepare.pack_dataset = timed_pack
start = time.perf_counter()
texts = prepare.load_texts(cfg).train
loaded = time.perf_counter()
rows = prepare.training_rows(cfg, texts, tok)
if streaming:
    blocks = 0
    for _ in rows:
        if rows.passes:  # the first block of the second pass
            break
        blocks += 1
        rows.release(blocks)  # as a training run does after each step: the stream forgets what is trained on
    n_texts = rows.texts_read
else:
    blocks, n_texts = len(rows), len(texts)
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
kib = lambda key: int(status.get(key, "0 kB").split()[0]) / 2**20  # noqa: E731
print(json.dumps({"texts": n_texts, "tokens": blocks * block, "seconds": seconds,
                  "load_seconds": loaded - start, "pack_seconds": None if streaming else packing[0],
                  "tokenize_tokens_per_s": None if streaming else blocks * block / (seconds - (loaded - start)
                                                                                    - packing[0]),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "rss_anon_gb_end": kib("RssAnon"), "rss_file_gb_end": kib("RssFile")}))
"""


def compare_encoders(tokenizer_dir: Path, n: int, rounds: int = 3) -> list[dict]:
    """tokens/s of transformers' ``tokenizer(texts)`` against the fast path ``tokenize_truncate`` takes
    (``encode_batch_fast``), on the same ``n`` stories in batches of 1000, alternating, ``rounds`` times each."""
    import statistics
    import time

    from tinypretrain.data.pack import _token_ids

    tok, stories = tp.load_tokenizer(str(tokenizer_dir)), tp.generate_stories(n, seed=7)
    encoders = {"tokenizer(texts)": lambda b: tok(b, add_special_tokens=False, verbose=False)["input_ids"],
                "encode_batch_fast": lambda b: _token_ids(tok, b)}
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            start = time.perf_counter()
            tokens = sum(len(ids) for i in range(0, n, 1000) for ids in encode(stories[i : i + 1000]))
            rates[name].append(tokens / (time.perf_counter() - start))
    base = statistics.median(rates["tokenizer(texts)"])
    return [{"encoder": name, "tokens_per_s": statistics.median(r), "ratio": statistics.median(r) / base,
             "load_1m": os.getloadavg()[0]} for name, r in rates.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--modes", nargs="+", choices=["cached", "streamed"], default=["cached", "streamed"])
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--encoders", type=int, metavar="N",
                        help="Only compare the two batch encoders on N stories (tokens/s, alternating, 3 rounds).")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-scale-"))
    tokenizer = work / "tok"
    tp.train_tokenizer(tp.generate_stories(20_000, seed=1), vocab_size=4096, save_dir=tokenizer)
    if args.encoders:
        table = compare_encoders(tokenizer, args.encoders)
        print_table(table, ["encoder", "tokens_per_s", "ratio", "load_1m"])
        write_json(args.json, {"machine": machine(), "encoders": table})
        shutil.rmtree(work)
        return
    rows = []
    try:
        for n in args.stories:
            corpus = work / f"stories-{n}" / "train.txt"
            corpus.parent.mkdir()
            with corpus.open("w", encoding="utf-8") as handle:
                for start in range(0, n, 50_000):
                    handle.write(eot_text(tp.generate_stories(min(50_000, n - start), seed=start)))
            for mode in args.modes:
                cache = work / f"cache-{n}-{mode}"
                env = {**os.environ, "HF_DATASETS_CACHE": str(cache)}
                load = os.getloadavg()[0]
                proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus.parent), str(tokenizer),
                                       str(args.block), mode], capture_output=True, text=True, env=env)
                if proc.returncode:
                    sys.exit(proc.stderr[-3000:])
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append({"mode": mode, "stories": n, **result, "tokens_per_s": result["tokens"] / result["seconds"],
                             "load_1m": load})
                print_table(rows[-1:], COLUMNS)
                write_json(args.json, {"machine": machine(), "rows": rows})
                shutil.rmtree(cache, ignore_errors=True)
            corpus.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
