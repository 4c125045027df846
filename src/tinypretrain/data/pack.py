"""Data pipeline: tokenize with truncation or splitting, and pack into fixed blocks (loading is in ``load``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value

from ..utils.memory import cache_files, release_mapped_pages


# -------------------------------------------------------------------------------------------------------- tokenizing
def _texts(batch: dict[str, list], text_column: str) -> list[str]:
    if text_column not in batch:
        raise ValueError(f"Column {text_column!r} not in batch {list(batch)}; pass text_column=<one of those>.")
    texts = batch[text_column]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"Column {text_column!r} must hold strings, found {type(bad).__name__}: {bad!r:.60}.")
    return texts


def _token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """``texts`` encoded without special tokens. A fast tokenizer's Rust batch encoder without offsets
    (``encode_batch_fast``) is 1.5x ``tokenizer(texts)`` on 2 cores (benchmarks/RESULTS.md, data pipeline), the
    same ids; a backend set to truncate or pad (which the call would undo) and slow tokenizers take the call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    # verbose=False: no "longer than the maximum sequence length" warning, as the rows are cut to max_length later.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def tokenize_truncate(
    batch: dict[str, list],
    tokenizer: Any,
    *,
    max_length: int = 2048,
    text_column: str = "text",
    keep: Literal["tail", "head"] = "tail",
    add_eos: bool = True,
    overflow: Literal["truncate", "split"] = "truncate",
    return_attention_mask: bool = True,
) -> dict[str, list[list[int]]]:
    """Tokenize a batch of texts into examples of at most ``max_length`` tokens ending in EOS.

    The seed's semantics: encode without special tokens (no BOS), keep the last ``max_length-1`` tokens
    (``keep="head"`` keeps the first), append EOS; the attention mask is all ones. ``overflow="split"`` instead
    cuts a long text into consecutive examples of at most ``max_length`` tokens, losing nothing, with EOS only at
    the text's true end; it changes the row count, so map it with ``remove_columns=ds.column_names``.
    ``return_attention_mask=False`` leaves the mask out (packing never reads it; writing it costs 8% of the time).
    Use as ``ds.map(tokenize_truncate, batched=True, fn_kwargs={"tokenizer": tok, ...})``.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for a token and EOS), got {max_length}.")
    if keep not in ("tail", "head"):
        raise ValueError(f"keep must be 'tail' or 'head', got {keep!r}.")
    if overflow not in ("truncate", "split"):
        raise ValueError(f"overflow must be 'truncate' or 'split', got {overflow!r}.")
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise ValueError(
            "The tokenizer has no EOS token; set one (tokenizer.eos_token = '</s>') or pass add_eos=False."
        )
    encoded = _token_ids(tokenizer, _texts(batch, text_column))
    tail = [eos] if add_eos else []
    if overflow == "split":
        examples = []
        for ids in encoded:
            ids += tail  # a fresh list from the encoder
            if len(ids) <= max_length:  # most texts: one example, no slicing
                examples.append(ids)
            else:
                examples.extend(ids[i : i + max_length] for i in range(0, len(ids), max_length))
    else:
        budget = max_length - len(tail)
        examples = [(ids[-budget:] if keep == "tail" else ids[:budget]) + tail for ids in encoded]
    if not return_attention_mask:
        return {"input_ids": examples}
    return {"input_ids": examples, "attention_mask": [[1] * len(ids) for ids in examples]}


# ----------------------------------------------------------------------------------------------------------- packing
def _flatten(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    return np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum())), lengths


def _token_stream(sequences: Sequence[Sequence[int]] | pa.Array | pa.ChunkedArray, eos_token_id: int | None) -> np.ndarray:
    """All tokens of ``sequences`` in order, with ``eos_token_id`` after each one when given."""
    if isinstance(sequences, (pa.Array, pa.ChunkedArray)):
        column = sequences.combine_chunks() if isinstance(sequences, pa.ChunkedArray) else sequences
        flat = column.flatten().to_numpy(zero_copy_only=False)
        lengths = np.diff(column.offsets.to_numpy())
    else:
        flat, lengths = _flatten(sequences)
    return np.insert(flat, np.cumsum(lengths), eos_token_id) if eos_token_id is not None else flat


def _blocks(streams: Iterable[np.ndarray], block_size: int) -> Iterator[np.ndarray]:
    """The one packer: token streams, read in order as one, cut into ``[n, block_size]`` arrays as they come; the
    tokens left over from one stream start the next block, and only the final partial block is dropped."""
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}.")
    carry = np.empty(0, dtype=np.int64)
    for stream in streams:
        stream = np.concatenate([carry, stream]).astype(np.int64, copy=False)
        n_blocks = len(stream) // block_size
        yield stream[: n_blocks * block_size].reshape(n_blocks, block_size)
        carry = stream[n_blocks * block_size :]


def pack_sequences(
    sequences: Sequence[Sequence[int]] | pa.Array | pa.ChunkedArray,
    block_size: int,
    *,
    eos_token_id: int | None = None,
) -> np.ndarray:
    """Concatenate token sequences into one stream and cut it into ``[n_blocks, block_size]`` blocks.

    run_clm-style packing: no padding is ever trained on, and a block may span several documents (attention
    crosses their EOS separators). Pass ``eos_token_id`` to insert it after every sequence (leave it ``None``
    when sequences already end with EOS, as ``tokenize_truncate`` makes them). The remainder, the final
    ``total % block_size`` (< block_size) tokens of the stream, is dropped.
    """
    return np.concatenate([np.empty((0, block_size), np.int64), *_blocks([_token_stream(sequences, eos_token_id)],
                                                                          block_size)])


def pack_stream(batches: Iterable[Sequence[Sequence[int]]], block_size: int) -> Iterator[np.ndarray]:
    """Pack an endless or huge stream of token-sequence batches into ``block_size`` blocks, one block at a time.

    The streaming twin of ``pack_sequences``: tokens left over from one batch start the next block, so the
    output equals ``pack_sequences`` of everything concatenated. Only the stream's final partial block is dropped.
    """
    for blocks in _blocks((_flatten(batch)[0] for batch in batches), block_size):
        yield from blocks


def pack_dataset(
    ds: Dataset,
    block_size: int,
    *,
    column: str = "input_ids",
    eos_token_id: int | None = None,
    chunk_rows: int = 20_000,
) -> Dataset:
    """Pack a tokenized dataset's ``column`` into a dataset of ``block_size`` blocks (``input_ids`` only).

    Equal to ``pack_sequences`` of the whole column (only the stream's final ``total % block_size`` tokens are
    dropped, not a remainder per batch as in run_clm), but it reads ``chunk_rows`` sequences at a time and writes the
    blocks to the datasets cache as it goes, so memory stays flat however large the corpus (benchmarks/data_scale.py).
    """
    if column not in ds.column_names:
        raise ValueError(f"Column {column!r} not found in {ds.column_names}; tokenize first (tokenize_truncate).")
    per_row = 0 if eos_token_id is None else 1
    tokens = sum(pc.sum(pc.list_value_length(c)).as_py() or 0 for c in _column_chunks(ds, column, chunk_rows))
    if tokens + per_row * len(ds) < block_size:
        raise ValueError(
            f"Not enough tokens for one block of {block_size} ({len(ds)} sequences). Use more data or a smaller "
            "max_length."
        )
    return Dataset.from_generator(
        _packed_rows,
        features=Features({"input_ids": List(Value("int32"), length=block_size)}),
        gen_kwargs={"ds": ds, "block_size": block_size, "column": column, "eos_token_id": eos_token_id,
                    "chunk_rows": chunk_rows},
    )


def _column_chunks(ds: Dataset, column: str, chunk_rows: int) -> Iterator[pa.Array]:
    # The arrow-formatted column honours select()/shuffle() indices, unlike ds.data.
    return (batch[column] for batch in ds.with_format("arrow").iter(batch_size=chunk_rows))


def _packed_rows(
    ds: Dataset, block_size: int, column: str, eos_token_id: int | None, chunk_rows: int
) -> Iterator[dict[str, np.ndarray]]:
    files = cache_files(ds)

    def streams() -> Iterator[np.ndarray]:
        for chunk in _column_chunks(ds, column, chunk_rows):
            yield _token_stream(chunk, eos_token_id)
            release_mapped_pages(files)

    for blocks in _blocks(streams(), block_size):
        for block in blocks:
            yield {"input_ids": block.astype(np.int32)}


def token_fingerprint(ds: Dataset, column: str = "input_ids", chunk_rows: int = 20_000) -> tuple[int, str]:
    """The number of tokens in ``ds[column]`` and a 16-hex-digit hash of them in order: two runs trained on the same
    token rows (same text, tokenizer and packing) share the fingerprint, which a run's card records."""
    digest, tokens = hashlib.blake2b(digest_size=8), 0
    files = cache_files(ds)
    for chunk in _column_chunks(ds, column, chunk_rows):
        lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(chunk).to_numpy(zero_copy_only=False).astype(np.int64)
        digest.update(lengths.tobytes())
        digest.update(values.tobytes())
        tokens += len(values)
        release_mapped_pages(files)
    return tokens, digest.hexdigest()
