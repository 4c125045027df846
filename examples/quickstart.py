"""Quickstart: train a tiny story model on the built-in corpus, on CPU, in a few minutes; then sample from it.

python examples/quickstart.py
"""

import tinypretrain as tp

result = tp.pretrain(output_dir="runs/quickstart", overwrite_output_dir=True)  # built-in stories, cpu-2m preset
print(f"saved to {result.output_dir}")
print({k: round(v, 3) for k, v in result.metrics.items() if k.startswith("eval_")})

for story in tp.generate(result.model, result.tokenizer, ["Once upon a time", "Tom and his dog"], seed=0):
    print(story, "\n---")
