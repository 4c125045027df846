"""The seed recipe (a Chinese blog post reproducing TinyStories with a 20M LLaMA), and our fast settings beside it.

    python examples/reproduce_seed.py --recipe seed   # Llama-2 tokenizer, TinyStoriesV2 train[:10%], 2 epochs
    python examples/reproduce_seed.py --recipe fast   # same model and data, recommended settings
    python examples/reproduce_seed.py --recipe fast --dataset ../shared/data/tinystories --tokenizer runs/tok32k

The seed recipe here runs through pretrain() with the seed's exact hyperparameters (recipe "seed"); the one thing
it does not copy is the seed's collator bug that masks every EOS label (benchmarks/seed_recipe.py keeps even that).
Offline, pass a local --dataset and a --tokenizer trained with `tinypretrain tokenizer train`.
"""

import argparse

import tinypretrain as tp

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--recipe", choices=["seed", "fast"], default="fast")
parser.add_argument("--dataset", default=None, help="Default: the recipe's noanabeshima/TinyStoriesV2.")
parser.add_argument("--train_split", default=None, help="Default: train[:10%%] on the hub, train for a local path.")
parser.add_argument("--tokenizer", default=None, help="Default: the recipe's NousResearch/Llama-2-7b-hf.")
parser.add_argument("--output_dir", default=None)
parser.add_argument("--max_steps", type=int, default=-1, help="Cut the run short (smoke tests).")
args = parser.parse_args()

# "seed": batch 4 padded stories, lr 1e-4 cosine, Kaiming, 2 epochs; "fast": packed 512-token blocks, see RESULTS.md.
overrides = {"dataset": args.dataset, "tokenizer": args.tokenizer, "train_split": args.train_split}
if args.dataset and not args.train_split:
    overrides["train_split"] = "train"  # a local corpus: all of it
result = tp.pretrain(
    recipe=args.recipe,
    output_dir=args.output_dir or f"runs/reproduce-{args.recipe}",
    max_steps=args.max_steps,
    **{k: v for k, v in overrides.items() if v is not None},
)
print(f"{args.recipe}: {result.metrics}")
print(tp.generate(result.model, result.tokenizer, ["Once upon a time"], seed=0)[0])
