"""Instruction tuning in a few lines: pretrain a small base on the built-in stories, then fine-tune it on
TinyStories-Instruct-style prompts ("Words: ...\\nSentence: ...\\nStory:") built from stories it never saw.

    python examples/sft.py                      # ~3 min on 2 CPU cores
    python examples/sft.py --base runs/my-run   # or fine-tune a model you trained

The same as `tinypretrain sft BASE --max_time 90s`; run.json's "sft" holds the instruction score before and after.
"""

import argparse

import tinypretrain as tp

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--base", help="A pretrained run folder (default: pretrain a small one first).")
args = parser.parse_args()

base = args.base or tp.pretrain(output_dir="runs/sft-base", overwrite_output_dir=True, max_time="90s").output_dir
result = tp.pretrain(tp.SFTConfig(base=str(base), output_dir="runs/sft", overwrite_output_dir=True, max_time="90s"))
print(tp.generate(result.model, result.tokenizer, "Words: dog, ball, happy\nStory:", seed=0)[0])
