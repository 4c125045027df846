"""SFT with tinypretrain's pieces: TinyStories-Instruct-style "Words: ...\\nStory:" prompts with masked prompt labels.

    python examples/sft.py                      # pretrains a small base on the built-in corpus first (~2 min CPU)
    python examples/sft.py --base runs/my-run   # or fine-tunes a model you trained

It builds (prompt -> story) pairs where the prompt lists words sampled from the story, masks the prompt's labels
(-100, kept by causal_collator), fine-tunes with HF Trainer, and reports how often the requested words appear in
generated stories before and after.
"""

from __future__ import annotations

import argparse
import random
import re

from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

import tinypretrain as tp

STOPWORDS = set("that this with they them then there their were what when from have said very will your into".split())


def pick_words(story: str, rng: random.Random, k: int = 3) -> list[str]:
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]+", story) if len(w) > 3} - STOPWORDS)
    return rng.sample(words, min(k, len(words)))


def prompt_for(words: list[str]) -> str:
    return f"Words: {', '.join(words)}\nStory:"


def pick_words_from(prompt: str) -> list[str]:
    return prompt.removeprefix("Words: ").split("\n")[0].split(", ")


def encode(prompt: str, story: str, tokenizer, max_length: int) -> dict[str, list[int]]:
    """EOS + prompt (labels masked) + story + EOS (labels kept): the model learns to answer, not to ask."""
    eos = tokenizer.eos_token_id
    prompt_ids = [eos] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    story_ids = tokenizer(" " + story, add_special_tokens=False)["input_ids"] + [eos]
    ids, labels = prompt_ids + story_ids, [-100] * len(prompt_ids) + story_ids
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def word_hit_rate(model, tokenizer, cases: list[tuple[str, list[str]]], seed: int) -> float:
    outputs = tp.generate(model, tokenizer, [p for p, _ in cases], max_new_tokens=160, seed=seed)
    hits = total = 0
    for (prompt, words), text in zip(cases, outputs):
        story = text[len(prompt) :].lower()
        hits += sum(re.search(rf"\b{w}\b", story) is not None for w in words)
        total += len(words)
    return hits / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="A pretrained run folder (default: pretrain a small one first).")
    parser.add_argument("--output_dir", default="runs/sft")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=4000)
    args = parser.parse_args()

    base_dir = args.base
    if base_dir is None:
        base_dir = str(tp.pretrain(output_dir="runs/sft-base", overwrite_output_dir=True, max_steps=200).output_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = tp.load_tokenizer(base_dir)
    max_length = model.config.max_position_embeddings

    rng = random.Random(0)
    stories = tp.generate_stories(args.pairs + 64, seed=12345)  # stories the base model never saw
    pairs = [(prompt_for(pick_words(s, rng)), s) for s in stories]
    train = Dataset.from_list([encode(p, s, tokenizer, max_length) for p, s in pairs[: args.pairs]])
    held_out = [(p, pick_words_from(p)) for p, _ in pairs[args.pairs :]]

    before = word_hit_rate(model, tokenizer, held_out, seed=0)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output_dir,
            max_steps=args.steps,
            per_device_train_batch_size=16,
            learning_rate=1e-3,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            logging_steps=25,
            save_strategy="no",
            report_to="none",
        ),
        train_dataset=train,
        data_collator=tp.causal_collator(tokenizer),  # pads with -100 and keeps the masked prompt labels
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    after = word_hit_rate(model, tokenizer, held_out, seed=0)
    print(f"\nRequested words that appear in the story: before SFT {before:.0%}, after SFT {after:.0%}")
    prompt, _ = held_out[0]
    print(tp.generate(model, tokenizer, [prompt], seed=0)[0])


if __name__ == "__main__":
    main()
