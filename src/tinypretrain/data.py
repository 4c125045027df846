"""Data pipeline: load text corpora, tokenize with truncation or splitting, and pack into fixed blocks."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    List,
    ReadInstruction,
    Value,
    concatenate_datasets,
    load_dataset,
)
from datasets.exceptions import DatasetGenerationError

from .hub import looks_local, require_hub
from .memory import cache_files, release_mapped_pages

EOT = "<|endoftext|>"
# How split names in file names map to dataset splits (TinyStoriesV2 ships `...-valid.txt`).
_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
}
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_SUFFIXES = (".txt", *_BUILDERS)


# ----------------------------------------------------------------------------------------------------------- loading
def read_eot_text(paths: Sequence[str]) -> Iterator[dict[str, str]]:
    """Yield ``{"text": record}`` from ``.txt`` files whose records are separated by ``<|endoftext|>``.

    A file with no separator in its first MiB is read as one record per non-empty line (the plain-text
    convention). Streams line by line, so files larger than memory are fine.
    """
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            try:
                by_line = EOT not in handle.read(1 << 20)
                handle.seek(0)
                record: list[str] = []
                for line in handle:
                    if by_line:
                        if line.strip():
                            yield {"text": line.rstrip("\n")}
                        continue
                    head, sep, tail = line.partition(EOT)
                    record.append(head)
                    while sep:
                        text = "".join(record).strip()
                        if text:
                            yield {"text": text}
                        head, sep, tail = tail.partition(EOT)
                        record = [head]
                text = "".join(record).strip()
                if text:
                    yield {"text": text}
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path} is not UTF-8 text (bad byte at offset {err.start}); re-encode it, e.g. "
                    f"`iconv -f latin1 -t utf-8 {path} > fixed.txt`."
                ) from None


def has_text(text: object) -> bool:
    """Whether ``text`` is a string with something besides whitespace (blank texts train and score only an EOS)."""
    return isinstance(text, str) and bool(text.strip())


def _split_of(path: Path) -> str | None:
    for word in re.split(r"[-_.]", path.name.lower()):
        match = re.fullmatch(r"(train|validation|valid|val|test)\d*", word)
        if match:
            return _SPLIT_NAMES[match.group(1)]
    return None


def _local_files(root: Path) -> dict[str, list[str]]:
    if root.is_file():
        return {"train": [str(root)]}
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
    by_split: dict[str, list[str]] = {}
    for path in files:
        split = _split_of(path)
        if split is not None:
            by_split.setdefault(split, []).append(str(path))
    if not by_split and files:
        by_split["train"] = [str(p) for p in files]
    if not by_split:
        raise ValueError(
            f"No readable data files in {root}: expected {', '.join(_SUFFIXES)} files, named by split "
            f"(train*, valid*/validation*, test*)."
        )
    return by_split


def _load_local_split(files: list[str], streaming: bool) -> Dataset | IterableDataset:
    suffixes = {Path(f).suffix for f in files}
    if len(suffixes) > 1:
        raise ValueError(f"Files of one split must share a format, got {sorted(suffixes)}: {files}.")
    suffix = suffixes.pop()
    if suffix not in _SUFFIXES:
        raise ValueError(f"Unsupported file type {suffix!r} ({files[0]}); use one of {', '.join(_SUFFIXES)}.")
    if suffix == ".txt":
        features = Features({"text": Value("string")})
        if next(read_eot_text(files), None) is None:  # datasets cannot build a split from zero examples
            empty = Dataset.from_dict({"text": []}, features=features)
            return empty.to_iterable_dataset() if streaming else empty
        if streaming:
            return IterableDataset.from_generator(read_eot_text, features=features, gen_kwargs={"paths": files})
        # The cache key must change when a file does; datasets would otherwise hash only the paths.
        stamps = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        fingerprint = hashlib.sha256(repr(stamps).encode()).hexdigest()[:32]
        try:
            return Dataset.from_generator(
                read_eot_text, features=features, gen_kwargs={"paths": files}, fingerprint=fingerprint
            )
        except DatasetGenerationError as err:
            if isinstance(err.__cause__, ValueError):  # our own message (e.g. not UTF-8), not datasets' wrapper
                raise err.__cause__ from None
            raise
    return load_dataset(_BUILDERS[suffix], data_files=files, split="train", streaming=streaming)


def _select(dsd: dict[str, Dataset | IterableDataset], split: str) -> Dataset | IterableDataset:
    if "%" in split and any(isinstance(ds, IterableDataset) for ds in dsd.values()):
        raise ValueError(f"A stream has no length, so {split!r} cannot be a percentage; use rows, e.g. train[:10000].")
    instructions = ReadInstruction.from_spec(split)
    names = {name for name in re.findall(r"([\w-]+)(?:\[[^\]]*\])?", split)}
    missing = names - dsd.keys()
    if missing:
        raise ValueError(f"Split {sorted(missing)} not found; available splits: {sorted(dsd)}.")
    empty = sorted(name for name in names if _num_rows(dsd[name]) == 0)
    if empty:
        raise ValueError(f"Split {empty} is empty: its files hold no texts. Add data or pick another split.")
    parts = []
    for piece in instructions.to_absolute({name: _num_rows(dsd[name]) for name in names}):
        ds = dsd[piece.splitname]
        if isinstance(ds, IterableDataset):
            parts.append(ds.skip(piece.from_).take(piece.to - piece.from_))
        else:
            parts.append(ds.select(range(piece.from_, piece.to)))
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _num_rows(ds: Dataset | IterableDataset) -> int:
    if isinstance(ds, IterableDataset):
        # Slicing a stream by percentage would need a full pass; absolute slices work without one.
        return 1 << 62
    return len(ds)


def check_text_column(ds: Dataset | IterableDataset, text_column: str) -> None:
    """Raise a ``ValueError`` naming the fix when ``text_column`` is missing or does not hold strings."""
    features = ds.features
    if features is None:
        return
    if text_column not in features:
        raise ValueError(
            f"Column {text_column!r} not found; the dataset has {list(features)}. Pass text_column=<one of those>."
        )
    feature = features[text_column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ValueError(
            f"Column {text_column!r} holds {feature}, not text. Point text_column at a string column "
            f"or convert it first (e.g. ds.map(lambda b: {{'text': [str(x) for x in b[{text_column!r}]]}}))."
        )


def load_text_dataset(
    source: str | Path,
    split: str | None = "train",
    *,
    text_column: str = "text",
    streaming: bool = False,
    **load_kwargs: Any,
) -> Dataset | IterableDataset | DatasetDict | IterableDatasetDict:
    """Load a text corpus from the hub or from local files, checked to have a string ``text_column``.

    ``source`` is a hub dataset name (``noanabeshima/TinyStoriesV2``), a file (``.txt`` with ``<|endoftext|>``
    separators, ``.jsonl``, ``.json``, ``.parquet``) or a directory whose files are named by split
    (``train*``, ``valid*``/``validation*``, ``test*``; ``valid`` becomes ``validation``). ``split`` takes slices
    like ``"train[:10%]"``; ``split=None`` returns every split as a ``DatasetDict``. ``streaming=True`` gives an
    ``IterableDataset`` for corpora larger than the disk cache (row slices only: a stream has no length).
    ``load_kwargs`` go to ``datasets.load_dataset`` on the hub path.
    """
    path = Path(source).expanduser()
    if path.exists():
        splits = {name: _load_local_split(files, streaming) for name, files in _local_files(path).items()}
        ds = (IterableDatasetDict if streaming else DatasetDict)(splits)
        if split is not None:
            ds = _select(ds, split)
    elif looks_local(str(source)) or path.suffix in _SUFFIXES:
        raise ValueError(f"{source} does not exist. Pass an existing file or directory, or a hub dataset name.")
    else:
        require_hub(str(source), "dataset")
        ds = load_dataset(str(source), split=split, streaming=streaming, **load_kwargs)
    for part in ds.values() if split is None else [ds]:
        check_text_column(part, text_column)
    return ds


# -------------------------------------------------------------------------------------------------------- tokenizing
def _texts(batch: dict[str, list], text_column: str) -> list[str]:
    if text_column not in batch:
        raise ValueError(f"Column {text_column!r} not in batch {list(batch)}; pass text_column=<one of those>.")
    texts = batch[text_column]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"Column {text_column!r} must hold strings, found {type(bad).__name__}: {bad!r:.60}.")
    return texts


def tokenize_truncate(
    batch: dict[str, list],
    tokenizer: Any,
    *,
    max_length: int = 2048,
    text_column: str = "text",
    keep: Literal["tail", "head"] = "tail",
    add_eos: bool = True,
    overflow: Literal["truncate", "split"] = "truncate",
) -> dict[str, list[list[int]]]:
    """Tokenize a batch of texts into examples of at most ``max_length`` tokens ending in EOS.

    The seed's semantics: encode without special tokens (no BOS), keep the last ``max_length-1`` tokens
    (``keep="head"`` keeps the first), append EOS; the attention mask is all ones. ``overflow="split"`` instead
    cuts a long text into consecutive examples of at most ``max_length`` tokens, losing nothing, with EOS only at
    the text's true end; it changes the row count, so map it with ``remove_columns=ds.column_names``.
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
    # verbose=False: no "longer than the maximum sequence length" warning, as the rows are cut to max_length below.
    encoded = tokenizer(_texts(batch, text_column), add_special_tokens=False, verbose=False)["input_ids"]
    tail = [eos] if add_eos else []
    if overflow == "split":
        examples = []
        for ids in encoded:
            ids = ids + tail
            examples.extend(ids[i : i + max_length] for i in range(0, max(len(ids), 1), max_length))
    else:
        budget = max_length - len(tail)
        examples = [(ids[-budget:] if keep == "tail" else ids[:budget]) + tail for ids in encoded]
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
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}.")
    flat = _token_stream(sequences, eos_token_id)
    n_blocks = len(flat) // block_size
    return flat[: n_blocks * block_size].astype(np.int64, copy=False).reshape(n_blocks, block_size)


def pack_stream(batches: Iterable[Sequence[Sequence[int]]], block_size: int) -> Iterator[np.ndarray]:
    """Pack an endless or huge stream of token-sequence batches into ``block_size`` blocks, one block at a time.

    The streaming twin of ``pack_sequences``: tokens left over from one batch start the next block, so the
    output equals ``pack_sequences`` of everything concatenated. Only the stream's final partial block is dropped.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}.")
    carry = np.empty(0, dtype=np.int64)
    for batch in batches:
        stream = np.concatenate([carry, _flatten(batch)[0]])
        n_blocks = len(stream) // block_size
        yield from stream[: n_blocks * block_size].reshape(n_blocks, block_size)
        carry = stream[n_blocks * block_size :]


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
    carry = np.empty(0, dtype=np.int64)
    files = cache_files(ds)
    for chunk in _column_chunks(ds, column, chunk_rows):
        stream = np.concatenate([carry, _token_stream(chunk, eos_token_id)])
        release_mapped_pages(files)
        n_blocks = len(stream) // block_size
        for block in stream[: n_blocks * block_size].reshape(n_blocks, block_size):
            yield {"input_ids": block.astype(np.int32)}
        carry = stream[n_blocks * block_size :]


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
