"""The seed recipe (../shared/seed), reproduced exactly and ported to transformers 5, for side-by-side benchmarks.

Differences from the blog's code are only the renames transformers 5 requires: ``processing_class`` for
``tokenizer``, ``dtype`` for ``torch_dtype``, ``eval_strategy`` for ``evaluation_strategy``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

MAX_TOKEN = 2048


def seed_model(vocab_size: int = 32000) -> Any:
    """The seed's config and Kaiming init, verbatim."""
    config = AutoConfig.for_model(
        "llama",
        hidden_size=256,
        intermediate_size=(int(256 * 8 / 3 / 128) + 1) * 128,
        num_attention_heads=16,
        num_hidden_layers=4,
        num_key_value_heads=8,
        vocab_size=vocab_size,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for name, param in model.named_parameters():
        if "weight" in name and param.dim() > 1:
            torch.nn.init.kaiming_uniform_(param, mode="fan_in", nonlinearity="relu")
        elif "bias" in name:
            torch.nn.init.constant_(param, 0)
    return model


def seed_tokenizer(tokenizer: Any) -> Any:
    """The seed's tokenizer setup: left padding, pad = eos."""
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "left"
    tok.pad_token = tok.eos_token
    return tok


def seed_process_func(examples: dict[str, list], tokenizer: Any) -> dict[str, list]:
    """The seed's tokenize + truncate (keep the last 2047 tokens, append EOS)."""
    encoded_texts = tokenizer(examples["text"], add_special_tokens=False)
    new_input_ids_list, new_attn_mask_list = [], []
    for input_ids in encoded_texts["input_ids"]:
        temp = input_ids[-MAX_TOKEN + 1 :] + [tokenizer.eos_token_id]
        new_input_ids_list.append(temp)
        new_attn_mask_list.append([1] * len(temp))
    return {"input_ids": new_input_ids_list, "attention_mask": new_attn_mask_list}


def seed_tokenize(ds: Any, tokenizer: Any, num_proc: int | None = 8, cache: bool = True) -> Any:
    """The seed's data step: shuffle, then map(process_func, num_proc=8)."""
    return ds.shuffle(seed=3407).map(
        seed_process_func,
        batched=True,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        load_from_cache_file=cache,
        fn_kwargs={"tokenizer": tokenizer},
    )


def seed_training_args(output_dir: str, **overrides: Any) -> TrainingArguments:
    """The seed's TrainingArguments (bf16 if supported else fp16, on GPU)."""
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args = dict(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_train_epochs=2,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        bf16=bf16,
        fp16=cuda and not bf16,
        logging_steps=50,
        eval_strategy="steps",
        eval_steps=1000,
        save_steps=1000,
        save_total_limit=2,
        seed=3407,
        report_to="none",
    )
    return TrainingArguments(**{**args, **overrides})


def seed_trainer(
    model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, args: TrainingArguments, **kwargs: Any
) -> Trainer:
    """The seed's Trainer with DataCollatorForLanguageModeling(mlm=False)."""
    collator = kwargs.pop("data_collator", None) or DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        **kwargs,
    )
