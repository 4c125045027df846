"""Batch collation for causal LM training that pads by attention mask, so EOS labels survive pad == eos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch


def _scatter(rows: Sequence[Any], valid: np.ndarray, fill: float, dtype: type = np.int64) -> np.ndarray:
    # One boolean scatter instead of a Python loop per row: all rows' valid cells at once.
    out = np.full(valid.shape, fill, dtype=dtype)
    out[valid] = np.concatenate([np.asarray(r, dtype=dtype).reshape(-1) for r in rows])
    return out


def _carried(features: list[dict[str, Any]], key: str) -> bool:
    carrying = sum(key in f for f in features)
    if 0 < carrying < len(features):
        raise ValueError(f"Some features carry {key} and some do not; give every feature {key} or none.")
    return carrying > 0


def causal_collator(
    tokenizer: Any = None,
    *,
    pad_token_id: int | None = None,
    padding_side: Literal["right", "left"] = "right",
    pad_to_multiple_of: int | None = None,
    label_pad_token_id: int = -100,
    document_eos_token_id: int | None = None,
) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Return a collator that pads ``input_ids`` and builds ``attention_mask`` and ``labels`` for causal LM.

    Padding is decided by the attention mask, never by token value: ``labels`` equal ``input_ids`` wherever the
    mask is 1 and ``label_pad_token_id`` elsewhere. With pad == eos (the seed's Llama-2 setup) every real EOS keeps
    its label, whereas ``DataCollatorForLanguageModeling`` masks them and models never learn to stop. Features
    that already carry ``labels`` (SFT prompt masking) keep them, padded with ``label_pad_token_id``, and
    ``loss_weights`` (per-token loss weights) come through as float32, padded with 0. The model shifts labels
    itself. ``pad_token_id`` defaults to the tokenizer's pad, then EOS.

    ``document_eos_token_id`` is for packed, padding-free rows holding several documents: ``position_ids`` restart
    after every such EOS and no ``attention_mask`` is returned, so transformers (SDPA/eager/flash) restricts
    attention to each document and no token attends across a document boundary.
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
        if document_eos_token_id is not None:
            return _documents(features, document_eos_token_id)
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
        if _carried(features, "labels"):
            labels = _scatter([f["labels"] for f in features], valid, label_pad_token_id)
        else:
            labels = np.where(mask == 1, input_ids, label_pad_token_id)
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
        }
        if _carried(features, "loss_weights"):
            weights = [f["loss_weights"] for f in features]
            batch["loss_weights"] = torch.from_numpy(_scatter(weights, valid, 0.0, np.float32))
        return batch

    return collate


def _documents(features: list[dict[str, Any]], eos: int) -> dict[str, torch.Tensor]:
    try:
        ids = np.stack([np.asarray(f["input_ids"], dtype=np.int64) for f in features])
    except ValueError:
        raise ValueError("Per-document positions need packed rows of equal length (pack_dataset blocks).") from None
    cols = np.arange(ids.shape[1])
    starts = np.zeros_like(ids, dtype=bool)
    starts[:, 1:] = ids[:, :-1] == eos  # a document starts right after each EOS
    # position = distance to the latest document start at or before it
    positions = cols - np.maximum.accumulate(np.where(starts, cols, 0), axis=1)
    labels = np.stack([np.asarray(f["labels"], dtype=np.int64) for f in features]) if "labels" in features[0] else ids
    return {
        "input_ids": torch.from_numpy(ids),
        "position_ids": torch.from_numpy(positions),
        "labels": torch.from_numpy(labels.copy()),
    }
