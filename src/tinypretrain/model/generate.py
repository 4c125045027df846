"""Batched sampling from a causal LM with HF ``generate``."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from threading import Lock
from typing import Any

import torch

from ..data.collate import causal_collator


@dataclass(frozen=True)
class Sampling:
    """How stories are sampled unless told otherwise, in one place: ``generate``, ``continue_prompts``, the
    ``generate`` command, a run's samples.md and its card's loading snippet (the seed's settings, plus top_p)."""

    max_new_tokens: int = 200
    top_k: int = 40
    top_p: float = 0.95
    temperature: float = 0.8

    def as_kwargs(self) -> str:
        """These settings as keyword arguments of ``model.generate``, for code snippets."""
        return (f"max_new_tokens={self.max_new_tokens}, do_sample=True, top_k={self.top_k}, top_p={self.top_p}, "
                f"temperature={self.temperature}")


SAMPLING = Sampling()
_SEEDED = Lock()  # held while a seeded generation draws random numbers


@dataclass(frozen=True)
class Continuation:
    """What a model wrote after a prompt (special tokens removed), and whether it stopped at EOS by itself."""

    text: str
    ended: bool


def generate(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = SAMPLING.max_new_tokens,
    top_k: int = SAMPLING.top_k,
    top_p: float = SAMPLING.top_p,
    temperature: float = SAMPLING.temperature,
    do_sample: bool = True,
    seed: int | None = None,
    prepend_eos: bool = True,
) -> list[str]:
    """Continue each prompt (prompt + continuation, as strings), stopping at EOS; sampled as ``SAMPLING`` says unless told otherwise.

    Prompts are left-padded into one batch so every row ends where generation starts. ``prepend_eos`` starts
    each prompt after an EOS, the story boundary that packed training streams contain, so an empty prompt
    means "a new story". ``seed`` makes sampling reproducible.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    continuations = continue_prompts(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
        temperature=temperature, do_sample=do_sample, seed=seed, prepend_eos=prepend_eos,
    )
    return [prompt + c.text for prompt, c in zip(prompts, continuations)]


@torch.no_grad()
def continue_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = SAMPLING.max_new_tokens,
    top_k: int = SAMPLING.top_k,
    top_p: float = SAMPLING.top_p,
    temperature: float = SAMPLING.temperature,
    do_sample: bool = True,
    seed: int | None = None,
    prepend_eos: bool = True,
    max_time: float | None = None,
    streamer: Any = None,
) -> list[Continuation]:
    """``generate``'s continuations alone, each with whether it ended at EOS within ``max_new_tokens`` (the story
    metrics need to know which stories end); ``max_time`` seconds stop sampling early (transformers' own limit);
    ``streamer`` (one prompt only) receives tokens as they come, as transformers' ``TextIteratorStreamer`` does.
    ``temperature=0`` means greedy decoding. ``top_p`` must be in (0, 1] and ``top_k`` >= 0 (0: no top-k cut)."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}.")
    if top_k < 0 or temperature < 0:
        raise ValueError(f"top_k and temperature must be >= 0 (0: no top-k cut; greedy), got {top_k}, {temperature}.")
    do_sample = do_sample and temperature > 0
    if not prompts:
        return []
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if eos is None:
        raise ValueError("The tokenizer has no EOS token; generation could not stop.")
    # verbose=False: a prompt may pass the tokenizer's training length; the model's context is longer.
    ids = [tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"] for p in prompts]
    rows = [([eos] if prepend_eos else []) + row for row in ids]
    if any(not row for row in rows):
        raise ValueError("An empty prompt needs prepend_eos=True (there is no token to start from).")
    batch = causal_collator(pad_token_id=pad, padding_side="left")([{"input_ids": r} for r in rows])
    device = next(model.parameters()).device
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    sampling = {"top_k": top_k, "top_p": top_p, "temperature": temperature} if do_sample else {}
    was_training = model.training
    model.eval()
    # A seed makes sampling reproducible without disturbing the caller's global RNG state; the lock keeps two seeded
    # generations in one process (a page serving two users) from drawing from each other's random numbers.
    with _SEEDED if seed is not None else nullcontext(), \
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            eos_token_id=eos,
            pad_token_id=pad,
            max_time=max_time,
            streamer=streamer,
            **sampling,
        )
    model.train(was_training)
    new = out[:, input_ids.shape[1] :]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [Continuation(text, bool(ended)) for text, ended in zip(texts, (new == eos).any(dim=1).tolist())]
