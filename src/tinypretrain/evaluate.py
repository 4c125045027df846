"""Per-story evaluation: loss, perplexity and tokenizer-agnostic bits per byte."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from .collate import causal_collator
from .loss import causal_lm_loss


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def evaluate(
    model: Any,
    tokenizer: Any,
    texts_or_dataset: Iterable[str] | Dataset,
    *,
    text_column: str = "text",
    max_length: int | None = None,
    batch_tokens: int = 16384,
    loss_chunk_size: int = 4096,
) -> dict[str, float]:
    """Score each non-blank text as its tokens + EOS (no BOS), the way the seed evaluates, and average over predicted
    tokens.

    Returns ``loss`` (mean nats per predicted token), ``perplexity`` (exp of it), ``bits_per_byte`` (summed nats /
    ln 2 / UTF-8 bytes of the scored text, comparable across tokenizers), and the counts behind them. Texts longer
    than ``max_length`` (default: the model's context) are scored on their first ``max_length`` tokens; their
    bytes are counted from those tokens. Batches are length-sorted so padding costs little.
    """
    texts = list(texts_or_dataset[text_column] if isinstance(texts_or_dataset, Dataset) else texts_or_dataset)
    texts = [t for t in texts if t and t.strip()]  # a blank text would score only its EOS
    if not texts:
        raise ValueError("evaluate() needs at least one non-blank text.")
    max_length = max_length or model.config.max_position_embeddings
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("The tokenizer has no EOS token; evaluation scores each text followed by EOS.")
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    examples, n_bytes = [], 0
    for text, ids in zip(texts, encoded):
        ids = ids + [eos]
        if len(ids) > max_length:
            ids = ids[:max_length]
            text = tokenizer.decode(ids, skip_special_tokens=True)
        n_bytes += len(text.encode("utf-8"))
        examples.append(ids)

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    collate = causal_collator(pad_token_id=eos)
    order = np.argsort([len(x) for x in examples])[::-1]
    nats, predicted, start = 0.0, 0, 0
    while start < len(order):
        width = len(examples[order[start]])
        size = max(1, batch_tokens // width)
        batch = collate([{"input_ids": examples[i]} for i in order[start : start + size]])
        start += size
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device):
            hidden = model.get_decoder()(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            head = model.get_output_embeddings().weight
            nats += causal_lm_loss(hidden, head, batch["labels"], chunk_size=loss_chunk_size).item()
        predicted += int((batch["labels"][:, 1:] != -100).sum())
    model.train(was_training)
    loss = nats / max(predicted, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nats / math.log(2) / max(n_bytes, 1),
        "stories": len(texts),
        "predicted_tokens": predicted,
        "bytes": n_bytes,
    }
