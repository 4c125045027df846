"""Batch collation for causal LM training that pads by attention mask, so EOS labels survive pad == eos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch


def _scatter(rows: Sequence[Any], valid: np.ndarray, fill: int) -> np.ndarray:
    # One boolean scatter instead of a Python loop per row: all rows' valid cells at once.
    out = np.full(valid.shape, fill, dtype=np.int64)
    out[valid] = np.concatenate([np.asarray(r, dtype=np.int64).reshape(-1) for r in rows])
    return out


def causal_collator(
    tokenizer: Any = None,
    *,
    pad_token_id: int | None = None,
    padding_side: Literal["right", "left"] = "right",
    pad_to_multiple_of: int | None = None,
    label_pad_token_id: int = -100,
) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Return a collator that pads ``input_ids`` and builds ``attention_mask`` and ``labels`` for causal LM.

    Padding is decided by the attention mask, never by token value: ``labels`` equal ``input_ids`` wherever the
    mask is 1 and ``label_pad_token_id`` elsewhere. With pad == eos (the seed's Llama-2 setup) every real EOS keeps
    its label, whereas ``DataCollatorForLanguageModeling`` masks them and models never learn to stop. Features
    that already carry ``labels`` (SFT prompt masking) keep them, padded with ``label_pad_token_id``. The model
    shifts labels itself. ``pad_token_id`` defaults to the tokenizer's pad, then EOS.
    """
    if pad_token_id is None and tokenizer is not None:
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:
        raise ValueError("causal_collator needs a pad id: pass a tokenizer with a pad/EOS token or pad_token_id=...")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of}.")
    left = padding_side == "left"

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        ids = [f["input_ids"] for f in features]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        width = int(lengths.max())
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        cols = np.arange(width)
        valid = cols >= width - lengths[:, None] if left else cols < lengths[:, None]
        input_ids = _scatter(ids, valid, pad_token_id)
        if any("attention_mask" in f for f in features):
            masks = [f["attention_mask"] if "attention_mask" in f else np.ones(n) for f, n in zip(features, lengths)]
            mask = _scatter(masks, valid, 0)
        else:
            mask = valid.astype(np.int64)
        with_labels = sum("labels" in f for f in features)
        if 0 < with_labels < len(features):
            raise ValueError("Some features carry labels and some do not; give every feature labels or none.")
        if with_labels:
            labels = _scatter([f["labels"] for f in features], valid, label_pad_token_id)
        else:
            labels = np.where(mask == 1, input_ids, label_pad_token_id)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
        }

    return collate
