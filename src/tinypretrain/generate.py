"""Batched sampling from a causal LM with HF ``generate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .collate import causal_collator


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 200,
    top_k: int = 40,
    top_p: float = 0.95,
    temperature: float = 0.8,
    do_sample: bool = True,
    seed: int | None = None,
    prepend_eos: bool = True,
) -> list[str]:
    """Continue each prompt (prompt + continuation, as strings), stopping at EOS; the seed's sampling defaults.

    Prompts are left-padded into one batch so every row ends where generation starts. ``prepend_eos`` starts
    each prompt after an EOS, the story boundary that packed training streams contain, so an empty prompt
    means "a new story". ``seed`` makes sampling reproducible.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        return []
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if eos is None:
        raise ValueError("The tokenizer has no EOS token; generation could not stop.")
    rows = [([eos] if prepend_eos else []) + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(not row for row in rows):
        raise ValueError("An empty prompt needs prepend_eos=True (there is no token to start from).")
    batch = causal_collator(pad_token_id=pad, padding_side="left")([{"input_ids": r} for r in rows])
    device = next(model.parameters()).device
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    sampling = {"top_k": top_k, "top_p": top_p, "temperature": temperature} if do_sample else {}
    was_training = model.training
    model.eval()
    # A seed makes sampling reproducible without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            eos_token_id=eos,
            pad_token_id=pad,
            **sampling,
        )
    model.train(was_training)
    continuations = tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
    return [prompt + text for prompt, text in zip(prompts, continuations)]
