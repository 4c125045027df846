"""Recipes: named, complete bundles of PretrainConfig settings."""

from __future__ import annotations

from typing import Any

# Named, complete bundles of settings. A recipe sets every field you do not give (PretrainConfig's resolution order).
# "seed" is the blog recipe we reproduce (its one bug, the EOS-masking collator, is not copied); "fast" is the seed's
# model and data with the settings we recommend (benchmarks/RESULTS.md). Each spells out all its settings so that
# changing a library default never changes a recipe.
_SEED_DATA = {
    "dataset": "noanabeshima/TinyStoriesV2",
    "train_split": "train[:10%]",
    "eval_split": "validation",
    "max_eval_samples": None,
    "tokenizer": "NousResearch/Llama-2-7b-hf",
    "preset": "seed-20m",
}
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        **_SEED_DATA,
        "packing": "truncate",
        "max_length": 2048,
        "init": "kaiming",
        "zero_init_projections": False,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.0,
        "weight_decay": 0.0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "max_grad_norm": 1.0,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 2.0,
        "eval_steps": 1000,
        "save_steps": 1000,
        "save_total_limit": 2,
        "logging_steps": 50,
    },
    "fast": {
        **_SEED_DATA,
        "packing": "pack",
        "max_length": 512,
        "init": "kaiming",
        "zero_init_projections": False,
        "learning_rate": 2e-3,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 0.05,
        "weight_decay": 0.1,
        "adam_beta1": 0.9,
        "adam_beta2": 0.95,
        "max_grad_norm": 1.0,
        "per_device_train_batch_size": None,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 1.0,
        "eval_steps": 0.2,
        "save_steps": 0.2,
        "save_total_limit": 2,
        "logging_steps": 10,
    },
}
