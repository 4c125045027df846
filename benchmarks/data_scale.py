"""Memory and speed of a training run's data pipeline as the corpus grows: the texts (blank ones dropped, eval texts
held out), tokenized with overflow="split" and packed into blocks (run_data.load_texts -> training_rows, as
`tinypretrain train` runs them) on N generated stories, each size in a fresh process with an empty datasets cache.

    python benchmarks/data_scale.py --stories 50000 500000 --json benchmarks/results/data_scale.json

Peak RSS is the child process's maximum resident set (getrusage), which includes Python, torch and the tokenizer,
and the pages of the memory-mapped Arrow cache files it has read (file-backed, reclaimable by the kernel); the
split at the end (RssAnon: the process's own memory, RssFile: mapped files) shows which part grows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import eot_text, machine, print_table, write_json

import tinypretrain as tp

COLUMNS = ["stories", "tokens", "seconds", "tokens_per_s", "peak_rss_gb", "rss_anon_gb_end", "rss_file_gb_end", "load_1m"]
CHILD = """
import json, resource, sys, tempfile, time
import tinypretrain as tp
from tinypretrain.data.prepare import load_texts, training_rows
corpus, tokenizer_dir, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = tp.PretrainConfig(dataset=corpus, tokenizer=tokenizer_dir, max_length=block, output_dir=tempfile.mkdtemp())
tok = tp.load_tokenizer(tokenizer_dir)
start = time.perf_counter()
texts = load_texts(cfg).train
packed = training_rows(cfg, texts, tok)
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
kib = lambda key: int(status.get(key, "0 kB").split()[0]) / 2**20  # noqa: E731
print(json.dumps({"texts": len(texts), "tokens": len(packed) * block, "seconds": seconds,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "rss_anon_gb_end": kib("RssAnon"), "rss_file_gb_end": kib("RssFile")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="data-scale-"))
    tokenizer = work / "tok"
    tp.train_tokenizer(tp.generate_stories(20_000, seed=1), vocab_size=4096, save_dir=tokenizer)
    rows = []
    for n in args.stories:
        corpus = work / f"stories-{n}" / "train.txt"
        corpus.parent.mkdir()
        with corpus.open("w", encoding="utf-8") as handle:
            for start in range(0, n, 50_000):
                stories = tp.generate_stories(min(50_000, n - start), seed=start)
                handle.write(eot_text(stories))
        env = {**os.environ, "HF_DATASETS_CACHE": str(work / f"cache-{n}")}
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus.parent), str(tokenizer), str(args.block)],
                              capture_output=True, text=True, env=env, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"stories": n, **result, "tokens_per_s": result["tokens"] / result["seconds"], "load_1m": load})
        print_table(rows[-1:], COLUMNS)
        write_json(args.json, {"machine": machine(), "rows": rows})
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
